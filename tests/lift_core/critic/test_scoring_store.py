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
    scored_keys,
    shards_dir_for,
)
from lift_core.schemas import MANIFEST_SCHEMA, SCORES_SCHEMA, caption_id, rows_to_table

MAPPING = RewardMapping.from_config(CriticConfig(), ScoreConfig())


C = caption_id("c")


def score_table(ids: list[str], critic: str, p_good: float, reason: str | None = None, caption: str = "c"):
    probs = np.tile(np.array([p_good, 1 - p_good, 0.0]), (len(ids), 3, 1))
    meta = [{"video_id": v, "uri": f"/v/{v}.mp4", "caption": caption, "source": "generated"} for v in ids]
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

    assert scored_keys(out, "new") == {("a", C), ("b", C), ("c", C)}
    assert scored_keys(out, "old-critic") == {("a", C), ("b", C)}
    assert scored_keys(out, "new", need_reasons=True) == {("b", C)}  # rows without rationales do not count

    assert compact_scores(out) == 5
    table = pq.read_table(out)
    assert table.schema == SCORES_SCHEMA
    rows = {(r["video_id"], r["critic_id"]): r for r in table.to_pylist()}
    assert len(rows) == table.num_rows == 5  # unique on (video_id, caption_id, critic_id)
    assert rows[("b", "new")]["p_good_semantic"] == 0.7 and rows[("b", "new")]["reason_semantic"] == "why"
    assert rows[("a", "old-critic")]["p_good_semantic"] == 0.9  # other critics' rows stay
    assert not os.path.exists(shards)
    assert scored_keys(out, "new") == {("a", C), ("b", C), ("c", C)}  # and resume reads the compacted file


def test_scores_are_keyed_by_video_and_caption(tmp_path):
    """One video under two captions is two score rows; a rescore of one caption replaces only that row."""
    out = str(tmp_path / "scores.parquet")
    shards = shards_dir_for(out)
    storage.write_table(f"{shards}/part-r1-000000.parquet", score_table(["a"], "k", 0.9, caption="a red ball"))
    storage.write_table(f"{shards}/part-r1-000001.parquet", score_table(["a"], "k", 0.1, caption="a blue cube"))
    storage.write_table(f"{shards}/part-r2-000000.parquet", score_table(["a"], "k", 0.5, caption="a  red ball "))
    red, blue = caption_id("a red ball"), caption_id("a blue cube")
    assert red == caption_id("  a red\tball") != blue  # the key is the caption as the prompt sees it
    assert scored_keys(out, "k") == {("a", red), ("a", blue)}
    assert compact_scores(out) == 2
    rows = {r["caption_id"]: r for r in pq.read_table(out).to_pylist()}
    assert rows[red]["p_good_semantic"] == 0.5 and rows[blue]["p_good_semantic"] == 0.1


def test_scores_written_before_caption_id_resume_and_compact(tmp_path):
    """A scores file of the old contract (no caption_id column) keeps its rows under the derived key."""
    out = str(tmp_path / "scores.parquet")
    old = score_table(["a", "b"], "k", 0.9)
    storage.write_table(out, old.drop_columns(["caption_id"]))
    storage.write_table(f"{shards_dir_for(out)}/part-r1-000000.parquet", score_table(["b"], "k", 0.2))
    assert scored_keys(out, "k") == {("a", C), ("b", C)}
    assert compact_scores(out) == 2
    table = pq.read_table(out)
    assert table.schema == SCORES_SCHEMA
    assert {r["video_id"]: r["p_good_semantic"] for r in table.to_pylist()} == {"a": 0.9, "b": 0.2}


def test_compacting_nothing_writes_an_empty_table(tmp_path):
    out = str(tmp_path / "scores.parquet")
    assert compact_scores(out) == 0
    assert pq.read_table(out).schema == SCORES_SCHEMA


def test_plan_splits_todo_done_and_missing_frames(tmp_path):
    rows = [{"video_id": v, "uri": f"/v/{v}", "caption": c, "source": s, "split": "test"}
            for v, c, s in [("a", "c", "hd-vila"), ("b", "c", "generated"), ("c", "c", "lift-hra"),
                            ("d", "c", "generated"), ("a", "c ", "x"), ("a", "c", "generated"), ("b", "other", "generated")]]
    uri = str(tmp_path / "m.parquet")
    storage.write_table(uri, rows_to_table(rows, MANIFEST_SCHEMA))
    manifest = read_manifests([uri], sources=["hd-vila", "generated"])
    # Filtered by source, one row per (video, caption): the first wins; b's second caption is its own row.
    assert list(zip(*(manifest.column(c).to_pylist() for c in ("video_id", "caption", "source")))) == [
        ("a", "c", "hd-vila"), ("b", "c", "generated"), ("d", "c", "generated"), ("b", "other", "generated")]
    assert manifest.column("caption_id").to_pylist() == [C, C, C, caption_id("other")]
    todo, missing = plan(manifest, frames_ids={"a", "b"}, done={("a", C), ("b", C)})
    assert todo.to_pylist() == [{"video_id": "b", "uri": "/v/b", "caption": "other", "caption_id": caption_id("other"),
                                 "source": "generated"}]
    assert [m["video_id"] for m in missing] == ["d"]
