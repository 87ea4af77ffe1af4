"""The scores store: partitioned atomic parts, dedup on read, temp files invisible, the id index."""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq

from lift_core import storage
from lift_core.rescore.store import (
    SETTLED_QUARANTINE_STAGE,
    STORE_SCHEMA,
    ScoresStore,
    dedup_earliest,
)
from lift_core.schemas import SCORES_SCHEMA, caption_id


def _row(vid: str, cid: str, reward: float, at: datetime, caption: str = "c") -> dict:
    return {"video_id": vid, "critic_id": cid, "uri": f"/v/{vid}.mp4", "caption": caption, "source": "generated",
            "reward": reward, "reward_lift": 0.2, "scored_at": at}


def test_parts_are_partitioned_by_date_and_roundtrip(tmp_path):
    st = ScoresStore(str(tmp_path / "store"))
    at = datetime(2026, 3, 4, 23, 59, tzinfo=timezone.utc)
    uri = st.append_scores([_row("a", "c1", 0.5, at), _row("b", "c1", 0.7, at)], run_id="r1", seq=1)
    assert re.search(r"/scores/scored_date=2026-03-04/part-\d{8}T\d+-r1-00001\.parquet$", uri)
    # Every part holds the whole scores contract plus provenance.
    assert set(SCORES_SCHEMA.names) <= set(pq.read_schema(uri).names)
    t = st.read_scores()
    assert t.schema.names == STORE_SCHEMA.names
    assert sorted(t.column("video_id").to_pylist()) == ["a", "b"]
    assert set(t.column("run_id").to_pylist()) == {"r1"}
    days = st.read_scores(["video_id", "scored_date"]).column("scored_date").to_pylist()
    assert days == ["2026-03-04", "2026-03-04"]


def test_dedup_on_read_keeps_the_earliest_score(tmp_path):
    st = ScoresStore(str(tmp_path / "store"))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    # Two writers that overlapped (e.g. a broken stale lock): "b"/c1 is in both parts.
    st.append_scores([_row("a", "c1", 0.1, t0), _row("b", "c1", 0.2, t0 + timedelta(seconds=5))], "r1", 1)
    st.append_scores([_row("b", "c1", 0.9, t0 + timedelta(seconds=1)), _row("b", "c2", 0.3, t0)], "r2", 1)
    raw = st.read_scores(dedup=False)
    assert raw.num_rows == 4
    t = st.read_scores()
    pairs = list(zip(t.column("video_id").to_pylist(), t.column("critic_id").to_pylist()))
    assert sorted(pairs) == [("a", "c1"), ("b", "c1"), ("b", "c2")]
    rewards = {p: r for p, r in zip(pairs, t.column("reward").to_pylist())}
    assert rewards[("b", "c1")] == 0.9  # scored at t0+1s: earlier than the 0.2 row at t0+5s
    assert st.read_scores(critic_id="c2").num_rows == 1
    assert dedup_earliest(raw.slice(0, 0)).num_rows == 0


def test_rows_are_keyed_by_video_caption_and_critic(tmp_path):
    """Two captions of one video are two rows; parts written before caption_id read under the derived key."""
    st = ScoresStore(str(tmp_path / "store"))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    st.append_scores([_row("a", "c1", 0.1, t0, "a red ball"), _row("a", "c1", 0.2, t0, "a blue cube")], "r1", 1)
    old = st.append_scores([_row("b", "c1", 0.3, t0)], "r0", 1)
    storage.write_table(old, pq.read_table(old).drop_columns(["caption_id"]))  # a part of the old contract
    st.append_scores([_row("b", "c1", 0.9, t0 + timedelta(seconds=1))], "r2", 1)  # a later duplicate of it
    t = st.read_scores(["video_id", "caption_id", "reward"])
    assert t.num_rows == 3 and set(zip(*(t.column(c).to_pylist() for c in ("video_id", "caption_id", "reward")))) == {
        ("a", caption_id("a blue cube"), 0.2), ("a", caption_id("a red ball"), 0.1), ("b", caption_id("c"), 0.3)}
    assert st.scored_pairs() == {("a", "c1"), ("b", "c1")}  # runs plan per (video, critic)


def test_temp_and_foreign_files_are_invisible_and_swept(tmp_path):
    st = ScoresStore(str(tmp_path / "store"))
    at = datetime.now(timezone.utc)
    st.append_scores([_row("a", "c1", 0.5, at)], "r1", 1)
    part_dir = tmp_path / "store/scores" / f"scored_date={at.date().isoformat()}"
    # What a writer killed mid-write leaves: a temp name (maybe truncated bytes), never a part name.
    tmp = part_dir / ".tmp-deadbeef-part-x.parquet"
    tmp.write_bytes(b"PAR1 half a file")
    (part_dir / "notes.txt").write_text("not a part")
    assert st.read_scores().column("video_id").to_pylist() == ["a"]
    assert st.sweep_temp_files(older_than_s=3600) == []  # too young: maybe a live writer's
    old = time.time() - 7200
    os.utime(tmp, (old, old))
    assert st.sweep_temp_files(older_than_s=3600) == [str(tmp)]
    assert not tmp.exists()


def test_scored_pairs_settle_scores_and_undecodable_content_only(tmp_path):
    st = ScoresStore(str(tmp_path / "store"))
    st.append_scores([_row("a", "c1", 0.5, datetime.now(timezone.utc))], "r1", 1)
    st.append_quarantine(
        [
            {"uri": "/v/bad.mp4", "video_id": "bad", "stage": SETTLED_QUARANTINE_STAGE, "error": "corrupt", "critic_id": "c1"},
            {"uri": "/v/nocap.mp4", "video_id": "nocap", "stage": "rescore-discover", "error": "no caption", "critic_id": "c1"},
        ],
        "r1", 0,
    )
    assert st.scored_pairs() == {("a", "c1"), ("bad", "c1")}
    q = st.read_quarantine()
    assert q.num_rows == 2 and set(q.column("run_id").to_pylist()) == {"r1"}


def test_index_roundtrip(tmp_path):
    st = ScoresStore(str(tmp_path / "store"))
    assert st.read_index() == {}
    st.append_index([{"uri": "/v/a.mp4", "version": "10:1.0", "video_id": "aa"}], "r1")
    st.append_index([{"uri": "/v/b.mp4", "version": "12:2.0", "video_id": "bb"}], "r2")
    assert st.read_index() == {("/v/a.mp4", "10:1.0"): "aa", ("/v/b.mp4", "12:2.0"): "bb"}
