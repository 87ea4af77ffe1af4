"""Score shards, resume bookkeeping and compaction (no model, no Ray)."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import numpy as np
import pyarrow.parquet as pq

from lift_core import storage
from lift_core.config import CriticConfig, ScoreConfig
from lift_core.critic.scoring import RewardMapping, assemble_rows, rows_to_scores_table
from lift_core.distributed.scoring_pool import (
    compact_scores,
    plan,
    read_manifests,
    scored_video_ids,
    shards_dir_for,
)
from lift_core.schemas import MANIFEST_SCHEMA, SCORES_SCHEMA, rows_to_table

MAPPING = RewardMapping.from_config(CriticConfig(), ScoreConfig())


def score_table(ids: list[str], critic: str, p_good: float, reason: str | None = None):
    probs = np.tile(np.array([p_good, 1 - p_good, 0.0]), (len(ids), 3, 1))
    meta = [{"video_id": v, "uri": f"/v/{v}.mp4", "caption": "c", "source": "generated"} for v in ids]
    reasons = [[reason] * 3 for _ in ids] if reason is not None else None
    return rows_to_scores_table(assemble_rows(meta, probs, reasons, MAPPING, critic, datetime.now(timezone.utc)))


def test_resume_bookkeeping_and_compaction(tmp_path):
    out = str(tmp_path / "scores.parquet")
    shards = shards_dir_for(out)
    storage.write_table(out, score_table(["a", "b"], "old-critic", 0.9))  # a finished earlier run
    storage.write_table(f"{shards}/part-r1-000000.parquet", score_table(["a", "b"], "new", 0.2))
    storage.write_table(f"{shards}/part-r1-000001.parquet", score_table(["c"], "new", 0.3))
    storage.write_table(f"{shards}/part-r2-000000.parquet", score_table(["b"], "new", 0.7, reason="why"))
    (tmp_path / "scores.parquet.parts" / ".tmp-123-part.parquet").write_bytes(b"PAR1 half a file")  # killed write

    assert scored_video_ids(out, "new") == {"a", "b", "c"}
    assert scored_video_ids(out, "old-critic") == {"a", "b"}
    assert scored_video_ids(out, "new", need_reasons=True) == {"b"}  # rows without rationales do not count

    assert compact_scores(out) == 5
    table = pq.read_table(out)
    assert table.schema == SCORES_SCHEMA
    rows = {(r["video_id"], r["critic_id"]): r for r in table.to_pylist()}
    assert len(rows) == table.num_rows == 5  # unique on (video_id, critic_id)
    assert rows[("b", "new")]["p_good_semantic"] == 0.7 and rows[("b", "new")]["reason_semantic"] == "why"
    assert rows[("a", "old-critic")]["p_good_semantic"] == 0.9  # other critics' rows stay
    assert not os.path.exists(shards)
    assert scored_video_ids(out, "new") == {"a", "b", "c"}  # and resume reads the compacted file


def test_compacting_nothing_writes_an_empty_table(tmp_path):
    out = str(tmp_path / "scores.parquet")
    assert compact_scores(out) == 0
    assert pq.read_table(out).schema == SCORES_SCHEMA


def test_plan_splits_todo_done_and_missing_frames(tmp_path):
    rows = [{"video_id": v, "uri": f"/v/{v}", "caption": "c", "source": s, "split": "test"}
            for v, s in [("a", "hd-vila"), ("b", "generated"), ("c", "lift-hra"), ("d", "generated"), ("a", "x")]]
    uri = str(tmp_path / "m.parquet")
    storage.write_table(uri, rows_to_table(rows, MANIFEST_SCHEMA))
    manifest = read_manifests([uri], sources=["hd-vila", "generated"])
    assert manifest.column("video_id").to_pylist() == ["a", "b", "d"]  # filtered, first row per id
    todo, missing = plan(manifest, frames_ids={"a", "b"}, done={"a"})
    assert todo.column("video_id").to_pylist() == ["b"]
    assert [m["video_id"] for m in missing] == ["d"]
