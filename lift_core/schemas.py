"""Arrow schemas of the Parquet contracts in DESIGN.md (one place, used by every stage)."""

from __future__ import annotations

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

SCORES_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("caption", pa.string()),
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


def rows_to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    rows = list(rows)
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


def quarantine_row(uri: str | None, stage: str, error: BaseException | str, video_id: str | None = None) -> dict:
    msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {"uri": uri, "video_id": video_id, "stage": stage, "error": msg}
