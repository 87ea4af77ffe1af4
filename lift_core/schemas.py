"""Arrow schemas of the Parquet contracts in DESIGN.md (one place, used by every stage)."""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import pyarrow as pa

from lift_core.config import DIMENSIONS

MANIFEST_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("caption", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        *[(f"label_{d}", pa.string()) for d in DIMENSIONS],
        *[(f"reason_{d}", pa.string()) for d in DIMENSIONS],
    ]
)

PROMPTS_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("caption", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("dimensions", pa.list_(pa.string())),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("video_id", pa.string()),
        ("stage", pa.string()),
        ("error", pa.string()),
    ]
)

def caption_id(caption: str | None) -> str:
    """The key of a caption in the scores contract: the first 16 hex characters of the sha256 of the
    caption as the critic's prompt sees it (whitespace runs collapsed, ends stripped), so two captions
    that make the same prompt share their scores and any other difference does not."""
    text = " ".join(str(caption or "").split())
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# Every dimension's prompt is the caption followed by that dimension's question (LiFT's fixed format),
# so all of a row's scores depend on the video AND the caption: a score row is unique on this key.
SCORE_KEY: tuple[str, ...] = ("video_id", "caption_id", "critic_id")

SCORES_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("caption", pa.string()),
        ("caption_id", pa.string()),
        ("source", pa.string()),
        ("critic_id", pa.string()),
        *[
            (f"{col}_{d}", typ)
            for d in DIMENSIONS
            for col, typ in (
                ("p_good", pa.float64()),
                ("p_normal", pa.float64()),
                ("p_bad", pa.float64()),
                ("label", pa.string()),
                ("reward", pa.float64()),
                ("reason", pa.string()),
            )
        ],
        ("reward", pa.float64()),
        ("reward_lift", pa.float64()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
    ]
)


def with_caption_id(table: pa.Table) -> pa.Table:
    """``table`` with a ``caption_id`` column, computed from ``caption`` where it is missing or null.

    Scores written before ``caption_id`` joined the contract have no such column; reading them through
    this keeps them under the key they were computed for.
    """
    if "caption_id" in table.column_names and table.column("caption_id").null_count == 0:
        return table
    if "caption" not in table.column_names:
        raise ValueError("scores without caption_id need a caption column to derive it")
    have = table.column("caption_id").to_pylist() if "caption_id" in table.column_names else [None] * table.num_rows
    ids = pa.array([c if c is not None else caption_id(cap) for c, cap in zip(have, table.column("caption").to_pylist())],
                   pa.string())
    if "caption_id" in table.column_names:
        return table.set_column(table.column_names.index("caption_id"), "caption_id", ids)
    return table.append_column("caption_id", ids)


def rows_to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    rows = list(rows)
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


def quarantine_row(uri: str | None, stage: str, error: BaseException | str, video_id: str | None = None) -> dict:
    msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {"uri": uri, "video_id": video_id, "stage": stage, "error": msg}
