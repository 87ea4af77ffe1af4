"""LiFT's own JSON rewards as score rows (``lift import-scores``, ``align.reward_source: file``).

Two of LiFT's files carry rewards:

- ``critic-output``: LiFT-Critic's answers (``critic_output_13b.json``): per video, ``"Label. reason"``
  for each dimension. A row gets one-hot label probabilities, the label and reason of each dimension,
  ``reward_d`` from ``critic.label_values`` and ``reward_lift`` with LiFT's mapping
  (``score.lift_values``: Good 0.9, Normal 0.2, Bad 0.05, the mean over the three dimensions) — the
  scorer's own arithmetic (``scoring.assemble_rows``). The label is the answer's first word
  (``lift_core.domain.parse_answer``, through the reader); LiFT's ``process_reward_score.py`` looks for
  "Normal", then "Bad", anywhere in the text, so an answer such as "Good. Not Bad" differs (Good here,
  Bad there); LiFT's published outputs start with the label and agree. It also rounds the mean to two
  decimals, which is left out here.
- ``alignment``: LiFT's alignment input (``[{video, caption, score}]``): ``reward`` and ``reward_lift``
  are the file's ``score``; there are no labels.

``critic_id`` is ``file-`` and the first 16 hex characters of the sha256 of the file's bytes, so the
rows of two files (or of a file and a critic) never collide. ``video_id`` is the content hash of the
video, as ingest computes it, so the rows join the manifests; an entry whose video cannot be read, or
that the reader rejects, becomes a quarantine row.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np

from lift_core import storage
from lift_core.config import DIMENSIONS, LABELS, CriticConfig, ScoreConfig
from lift_core.data.inputs import InputLimits, deciding_entry, load_json_list
from lift_core.data.manifest import write_manifest
from lift_core.schemas import MANIFEST_SCHEMA, QUARANTINE_SCHEMA, caption_id, quarantine_row, rows_to_table

FORMATS: tuple[str, ...] = ("critic-output", "alignment")
FILE_CRITIC_PREFIX = "file-"
STAGE = "import-scores"


def file_critic_id(uri: str, limits: InputLimits | None = None) -> str:
    """``file-<sha256 of the file's bytes, 16 hex>``: the critic id of rows imported from ``uri`` (read
    as a JSON source is: a regular file within ``data.max_json_bytes``)."""
    return FILE_CRITIC_PREFIX + storage.sha256_hex((limits or InputLimits()).read_json_bytes(uri))[:16]


def is_file_critic(critic_id: str | None) -> bool:
    return bool(critic_id) and str(critic_id).startswith(FILE_CRITIC_PREFIX)


def detect_format(uri: str, limits: InputLimits | None = None) -> str:
    """``alignment`` when the first entry that decides has a ``score``, ``critic-output`` when it has a
    critic answer (entries that decide nothing, such as ``null``, are looked past); ``critic-output``
    when none decides. Read as every command reads a JSON source (``load_json_list``)."""
    from lift_core.domain import CRITIC_OUTPUT_KEYS

    found = deciding_entry(load_json_list(uri, limits), [
        ("alignment", lambda e: "score" in e),
        ("critic-output", lambda e: any(k in e for k in CRITIC_OUTPUT_KEYS.values())),
    ])
    return found[0] if found else "critic-output"


def import_score_rows(
    fmt: str,
    uri: str,
    *,
    videos_root: str | None = None,
    source: str = "generated",
    critic: CriticConfig | None = None,
    score: ScoreConfig | None = None,
    limits: InputLimits | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(score rows, manifest rows, quarantine rows) of LiFT file ``uri`` in format ``fmt``, read within
    ``limits`` (the config's ``data.*`` bounds)."""
    from lift_core.critic.scoring import RewardMapping, assemble_rows
    from lift_core.data.sources import read_source

    if fmt not in FORMATS:
        raise ValueError(f"unknown --format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    limits = limits or InputLimits()
    mapping = RewardMapping.from_config(critic or CriticConfig(), score or ScoreConfig())
    result = read_source(fmt, uri, videos_root, source=source, limits=limits)
    quarantine = [quarantine_row(r.file, STAGE, str(r)) for r in result.rejects]
    cid = file_critic_id(uri, limits)
    meta, records = [], []
    for rec in result.records:
        try:
            vid = limits.video_content_id(rec["uri"])
        except (OSError, ValueError) as err:  # missing, unreadable or refused (not a regular file, too big)
            quarantine.append(quarantine_row(rec["uri"], STAGE, f"video not readable: {type(err).__name__}: {err}"))
            continue
        meta.append({"video_id": vid, "uri": rec["uri"], "caption": rec["caption"], "source": source,
                     "caption_id": caption_id(rec["caption"])})
        records.append(rec)
    now = datetime.now(timezone.utc)
    if fmt == "critic-output":
        probs = np.array([[[1.0 if rec[f"label_{d}"] == label else 0.0 for label in LABELS] for d in DIMENSIONS]
                          for rec in records]).reshape(len(records), len(DIMENSIONS), len(LABELS))
        reasons = [[rec[f"reason_{d}"] for d in DIMENSIONS] for rec in records]
        rows = assemble_rows(meta, probs, reasons, mapping, cid, now)
    else:
        rows = [{**m, "critic_id": cid, "scored_at": now, "reward": float(rec["score"]),
                 "reward_lift": float(rec["score"])} for m, rec in zip(meta, records)]
    manifest = {}
    for m in meta:  # one manifest row per video; labels stay empty (these are not human ratings)
        manifest.setdefault(m["video_id"], {k: m[k] for k in ("video_id", "uri", "caption", "source")})
    return rows, list(manifest.values()), quarantine


def import_scores(
    fmt: str,
    uri: str,
    out_uri: str,
    *,
    videos_root: str | None = None,
    source: str = "generated",
    critic: CriticConfig | None = None,
    score: ScoreConfig | None = None,
    limits: InputLimits | None = None,
) -> dict[str, Any]:
    """Write ``out_uri`` (scores), ``<out>.manifest.parquet`` and ``<out>.quarantine.parquet``; returns a summary."""
    from lift_core.critic.scoring import rows_to_scores_table

    rows, manifest, quarantine = import_score_rows(fmt, uri, videos_root=videos_root, source=source,
                                                   critic=critic, score=score, limits=limits)
    base = out_uri[: -len(".parquet")] if out_uri.endswith(".parquet") else out_uri
    outputs = {"scores": out_uri, "manifest": f"{base}.manifest.parquet", "quarantine": f"{base}.quarantine.parquet"}
    storage.write_table(outputs["scores"], rows_to_scores_table(rows))
    write_manifest(outputs["manifest"], rows_to_table(manifest, MANIFEST_SCHEMA))
    storage.write_table(outputs["quarantine"], rows_to_table(quarantine, QUARANTINE_SCHEMA))
    return {**outputs, "format": fmt, "critic_id": file_critic_id(uri, limits), "rows": len(rows),
            "quarantined": len(quarantine)}


def file_score_rows(uri: str, critic: CriticConfig | None = None, score: ScoreConfig | None = None,
                    limits: InputLimits | None = None) -> list[dict]:
    """Score rows of a reward file: a scores ``.parquet`` (as ``lift import-scores`` writes) or a LiFT
    JSON (``alignment`` or ``critic-output``, detected); rejects and unreadable videos are left out."""
    if uri.endswith(".parquet"):
        return storage.read_table(uri).to_pylist()
    rows, _, _ = import_score_rows(detect_format(uri, limits), uri, critic=critic, score=score, limits=limits)
    return rows
