"""A scores store in the old format (before the Delta table), written with plain pyarrow.

The layout is what ``lift_core/rescore/store.py`` wrote up to commit 3dbe560 (an append-only Parquet
folder, deduplicated at read time): checked then against that code, which read this writer's store
back row for row. The migration tests build their old stores with it.

    scores/scored_date=YYYY-MM-DD/part-<%Y%m%dT%H%M%S%f>-<run_id>-<seq:05d>.parquet
    quarantine/scored_date=YYYY-MM-DD/part-....parquet
    _index/part-<%Y%m%dT%H%M%S%f>-<run_id>.parquet
    _locks/<critic_id>.lock, _runs/<run_id>.json, .tmp-* files of killed writers
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from lift_core.schemas import QUARANTINE_SCHEMA, SCORES_SCHEMA, caption_id

OLD_SCORES = pa.schema([*SCORES_SCHEMA, ("run_id", pa.string()), ("generated_at", pa.timestamp("us", tz="UTC"))])
OLD_QUARANTINE = pa.schema([*QUARANTINE_SCHEMA, ("critic_id", pa.string()), ("run_id", pa.string()),
                            ("quarantined_at", pa.timestamp("us", tz="UTC"))])
OLD_INDEX = pa.schema([("uri", pa.string()), ("version", pa.string()), ("video_id", pa.string())])
T0 = datetime(2026, 3, 4, 10, 0, tzinfo=timezone.utc)


def score_row(vid: str, cid: str, reward: float, at: datetime, caption: str = "a red ball", run_id: str = "r1") -> dict:
    return {"video_id": vid, "critic_id": cid, "uri": f"/v/{vid}.mp4", "caption": caption,
            "caption_id": caption_id(caption), "source": "generated",
            "p_good_semantic": 0.5, "label_semantic": "Good", "reward_semantic": reward, "reward": reward,
            "reward_lift": 0.2, "scored_at": at, "run_id": run_id, "generated_at": at - timedelta(minutes=5)}


def _pipe(fs, path: str, data: bytes) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def _put(fs, path: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    _pipe(fs, path, buf.getvalue())


def _part_name(written: datetime, run_id: str, seq: int | None) -> str:
    return f"part-{written:%Y%m%dT%H%M%S%f}-{run_id}" + (f"-{seq:05d}" if seq is not None else "") + ".parquet"


def write_legacy_store(root: str) -> dict[str, Any]:
    """An old store under ``root`` (local path or fsspec URI) and what its old reader returned.

    It holds what the old format could hold: two writers that overlapped (a duplicate key, the
    earliest score wins), a part from before ``caption_id`` joined the contract, two scoring days,
    quarantine rows, the id index, a stale lock and a killed writer's temp file.
    """
    fs, base = fsspec.core.url_to_fs(str(root))
    base = base.rstrip("/")
    parts = [  # (run, seq, rows)
        ("r1", 1, [score_row("a", "c1", 0.1, T0), score_row("b", "c1", 0.2, T0 + timedelta(seconds=5))]),
        ("r2", 1, [score_row("b", "c1", 0.9, T0 + timedelta(seconds=1), run_id="r2"),
                   score_row("b", "c2", 0.3, T0, run_id="r2")]),
        ("r3", 1, [score_row("a", "c1", 0.4, T0 + timedelta(days=1), caption="a blue cube", run_id="r3"),
                   score_row("d", "c2", 0.6, T0 + timedelta(days=1), run_id="r3")]),
    ]
    for i, (run, seq, rows) in enumerate(parts):
        at = rows[0]["scored_at"]
        table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in OLD_SCORES} for r in rows], schema=OLD_SCORES)
        _put(fs, f"{base}/scores/scored_date={at.date().isoformat()}/{_part_name(at + timedelta(seconds=i), run, seq)}",
             table)
    # A part of the old contract: no caption_id column (read with it derived from the caption).
    old = pa.Table.from_pylist([{f.name: r.get(f.name) for f in OLD_SCORES if f.name != "caption_id"}
                                for r in [score_row("e", "c1", 0.7, T0, caption="  a  green   cone ", run_id="r0")]])
    _put(fs, f"{base}/scores/scored_date={T0.date().isoformat()}/{_part_name(T0 - timedelta(hours=1), 'r0', 1)}", old)
    # A writer killed mid-write: its temp file never counted.
    _pipe(fs, f"{base}/scores/scored_date={T0.date().isoformat()}/.tmp-deadbeef-part-x.parquet", b"PAR1 half")

    quarantine = [{"uri": "/v/bad.mp4", "video_id": "bad", "stage": "rescore-decode", "error": "corrupt",
                   "critic_id": "c1", "run_id": "r1", "quarantined_at": T0},
                  {"uri": "/v/nocap.mp4", "video_id": "nocap", "stage": "rescore-discover", "error": "no caption",
                   "critic_id": "c1", "run_id": "r1", "quarantined_at": T0},
                  {"uri": "/v/gone.mp4", "video_id": None, "stage": "rescore-discover", "error": "not found",
                   "critic_id": "c1", "run_id": "r1", "quarantined_at": T0}]
    _put(fs, f"{base}/quarantine/scored_date={T0.date().isoformat()}/{_part_name(T0, 'r1', 0)}",
         pa.Table.from_pylist(quarantine, schema=OLD_QUARANTINE))
    index = [[{"uri": "/v/a.mp4", "version": "10:1.0", "video_id": "a"}],
             [{"uri": "/v/b.mp4", "version": "12:2.0", "video_id": "b"}, {"uri": "/v/d.mp4", "version": "9:3.0", "video_id": "d"}]]
    for i, rows in enumerate(index):
        _put(fs, f"{base}/_index/{_part_name(T0 + timedelta(seconds=i), f'r{i + 1}', None)}",
             pa.Table.from_pylist(rows, schema=OLD_INDEX))
    _pipe(fs, f"{base}/_locks/c1.lock", json.dumps({"token": "t", "host": "h", "pid": 1, "heartbeat": 0,
                                                      "acquired": 0}).encode())
    _pipe(fs, f"{base}/_runs/r1.json", b'{"run_id": "r1"}')

    # What the old reader returned: one row per (video_id, caption_id, critic_id), the earliest score.
    scores = {("a", caption_id("a red ball"), "c1"): 0.1, ("b", caption_id("a red ball"), "c1"): 0.9,
              ("b", caption_id("a red ball"), "c2"): 0.3, ("a", caption_id("a blue cube"), "c1"): 0.4,
              ("d", caption_id("a red ball"), "c2"): 0.6, ("e", caption_id("a green cone"), "c1"): 0.7}
    return {"scores": scores, "raw_score_rows": 7, "quarantine": 3,
            "index": {("/v/a.mp4", "10:1.0"): "a", ("/v/b.mp4", "12:2.0"): "b", ("/v/d.mp4", "9:3.0"): "d"},
            "scored_pairs": {("a", "c1"), ("b", "c1"), ("b", "c2"), ("d", "c2"), ("e", "c1"), ("bad", "c1")}}
