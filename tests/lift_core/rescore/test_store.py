"""The scores store on Delta Lake: keyed idempotent MERGE, versions, compaction and vacuum, concurrent writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
from deltalake import DeltaTable

from lift_core.rescore.store import (
    SETTLED_QUARANTINE_STAGE,
    STORE_SCHEMA,
    ScoresStore,
    dedup_earliest,
)
from lift_core.schemas import SCORES_SCHEMA, caption_id

REPO = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 3, 4, 23, 59, tzinfo=timezone.utc)


def _row(vid: str, cid: str, reward: float, at: datetime = T0, caption: str = "c") -> dict:
    return {"video_id": vid, "critic_id": cid, "uri": f"/v/{vid}.mp4", "caption": caption, "source": "generated",
            "reward": reward, "reward_lift": 0.2, "scored_at": at}


def _keys(st: ScoresStore, **kw) -> list[tuple]:
    t = st.read_scores(["video_id", "caption_id", "critic_id"], dedup=False, **kw)
    return sorted(zip(*(t.column(c).to_pylist() for c in ("video_id", "caption_id", "critic_id"))))


def test_rows_land_in_a_delta_table_partitioned_by_day(tmp_path):
    st = ScoresStore(str(tmp_path / "store"))
    assert st.read_scores().num_rows == 0 and st.version() is None  # nothing written: no table yet
    out = st.append_scores([_row("a", "c1", 0.5), _row("b", "c1", 0.7, T0 + timedelta(minutes=2))], "r1", seq=1)
    assert out == {"version": 1, "inserted": 2, "skipped": 0}  # version 0 created the table
    table = tmp_path / "store/delta/scores"
    assert DeltaTable(str(table)).version() == 1
    parts = sorted(p.relative_to(table).parts[0] for p in table.rglob("*.parquet"))
    assert parts == ["scored_date=2026-03-04", "scored_date=2026-03-05"]  # each row's own UTC day
    # Every data file holds the whole scores contract plus provenance.
    assert set(SCORES_SCHEMA.names) <= set(pq.read_schema(next(table.rglob("*.parquet"))).names)
    t = st.read_scores()
    assert t.schema == STORE_SCHEMA
    assert t.column("video_id").to_pylist() == ["a", "b"] and set(t.column("run_id").to_pylist()) == {"r1"}
    assert st.read_scores(["video_id", "scored_date"]).column("scored_date").to_pylist() == ["2026-03-04", "2026-03-05"]
    assert st.read_scores(critic_id="c1").num_rows == 2 and st.read_scores(critic_id="c'2").num_rows == 0


def test_merge_is_idempotent_and_keeps_the_first_score(tmp_path):
    st = ScoresStore(str(tmp_path / "store"))
    rows = [_row("a", "c1", 0.1), _row("b", "c1", 0.2)]
    assert st.append_scores(rows, "r1", 1)["inserted"] == 2
    again = st.append_scores(rows, "r1", 1)  # the same batch again (a rerun): nothing added
    assert again["inserted"] == 0 and again["skipped"] == 2
    later = st.append_scores([_row("b", "c1", 0.9, T0 + timedelta(hours=1)), _row("b", "c2", 0.3)], "r2", 1)
    assert later["inserted"] == 1  # b/c1 is stored already: the first score stays
    # A batch with one key twice stores it once: the earliest score.
    st.append_scores([_row("d", "c1", 0.8, T0 + timedelta(seconds=5)), _row("d", "c1", 0.4, T0)], "r3", 1)
    rewards = {(r["video_id"], r["critic_id"]): r["reward"] for r in st.read_scores(dedup=False).to_pylist()}
    assert rewards == {("a", "c1"): 0.1, ("b", "c1"): 0.2, ("b", "c2"): 0.3, ("d", "c1"): 0.4}
    assert len(_keys(st)) == 4 == len(set(_keys(st)))  # physically unique, not only after dedup
    assert dedup_earliest(st.read_scores().slice(0, 0)).num_rows == 0


def test_rows_are_keyed_by_video_caption_and_critic(tmp_path):
    """Two captions of one video are two rows; runs plan per (video, critic)."""
    st = ScoresStore(str(tmp_path / "store"))
    st.append_scores([_row("a", "c1", 0.1, caption="a red ball"), _row("a", "c1", 0.2, caption="a blue cube")], "r1", 1)
    st.append_scores([_row("a", "c1", 0.9, caption="a  red ball ")], "r2", 1)  # the same prompt: the same key
    t = st.read_scores(["video_id", "caption_id", "reward"])
    assert sorted(zip(*(t.column(c).to_pylist() for c in ("caption_id", "reward")))) == sorted(
        [(caption_id("a red ball"), 0.1), (caption_id("a blue cube"), 0.2)])
    assert st.scored_pairs() == {("a", "c1")}


def test_quarantine_and_settled_pairs(tmp_path):
    st = ScoresStore(str(tmp_path / "store"))
    st.append_scores([_row("a", "c1", 0.5)], "r1", 1)
    bad = [{"uri": "/v/bad.mp4", "video_id": "bad", "stage": SETTLED_QUARANTINE_STAGE, "error": "corrupt", "critic_id": "c1"},
           {"uri": "/v/nocap.mp4", "video_id": "nocap", "stage": "rescore-discover", "error": "no caption", "critic_id": "c1"},
           {"uri": "/v/gone.mp4", "video_id": None, "stage": "rescore-discover", "error": "not found", "critic_id": "c1"}]
    st.append_quarantine(bad, "r1", 0)
    st.append_quarantine(bad, "r2", 0)  # recorded already (a null video_id too): not twice
    assert st.scored_pairs() == {("a", "c1"), ("bad", "c1")}
    q = st.read_quarantine()
    assert q.num_rows == 3 and set(q.column("run_id").to_pylist()) == {"r1"}


def test_index_roundtrip(tmp_path):
    st = ScoresStore(str(tmp_path / "store"))
    assert st.read_index() == {}
    st.append_index([{"uri": "/v/a.mp4", "version": "10:1.0", "video_id": "aa"}], "r1")
    st.append_index([{"uri": "/v/b.mp4", "version": "12:2.0", "video_id": "bb"},
                     {"uri": "/v/a.mp4", "version": "10:1.0", "video_id": "aa"}], "r2")
    assert st.read_index() == {("/v/a.mp4", "10:1.0"): "aa", ("/v/b.mp4", "12:2.0"): "bb"}
    assert st.index.read().num_rows == 2


def test_versions_are_the_history(tmp_path):
    st = ScoresStore(str(tmp_path / "store"))
    v1 = st.append_scores([_row("a", "c1", 0.1)], "run-1", 1)["version"]
    v2 = st.append_scores([_row("b", "c1", 0.2)], "run-2", 1)["version"]
    assert (v1, v2) == (1, 2) and st.version() == 2
    # Each version reads back as it was (time travel), the latest by default.
    assert _keys(st, version=v1) == [("a", caption_id("c"), "c1")]
    assert [k[0] for k in _keys(st)] == ["a", "b"]
    hist = st.history()
    assert [h["version"] for h in hist] == [2, 1, 0]  # newest first
    assert [h["operation"] for h in hist] == ["MERGE", "MERGE", "CREATE TABLE"]
    assert hist[0]["lift"] == {"operation": "rescore", "run_id": "run-2", "batch": 1} and hist[0]["rows_inserted"] == 1
    assert isinstance(hist[0]["timestamp"], int) and hist[0]["timestamp"] >= hist[1]["timestamp"]
    assert [h["lift"].get("run_id") for h in st.history(limit=1)] == ["run-2"]


def test_compaction_and_vacuum_keep_every_row(tmp_path):
    st = ScoresStore(str(tmp_path / "store"))
    for i in range(6):
        st.append_scores([_row(f"v{i}", "c1", i / 10), _row(f"v{i}", "c2", i / 10)], f"r{i}", 1)
        st.append_quarantine([{"uri": f"/v/q{i}.mp4", "video_id": f"q{i}", "stage": "s", "error": "e",
                               "critic_id": "c1"}], f"r{i}", 1)
    before = st.read_scores().to_pylist()
    files = st.scores.file_count()
    assert files >= 6
    assert st.maintain(min_files=files + 1) is None  # below the threshold: nothing done
    table_dir = tmp_path / "store/delta/scores"
    on_disk = len(list(table_dir.rglob("*.parquet")))

    done = st.maintain(min_files=files, retention_hours=0)
    assert done["files_before"] == files and done["files_after"] < files
    assert done["vacuumed"]["scores"] == on_disk  # the files compacted away are deleted, no other
    assert len(list(table_dir.rglob("*.parquet"))) == done["files_after"]
    assert st.read_scores().to_pylist() == before
    assert st.read_quarantine().num_rows == 6
    ops = [h["operation"] for h in st.history(limit=3)]
    assert ops == ["VACUUM END", "VACUUM START", "OPTIMIZE"]
    assert st.compact()["scores"]["numFilesAdded"] == 0  # compacting again changes nothing


_WRITER = """
import json, logging, os, sys, time
from datetime import datetime, timezone
from lift_core.rescore.store import ScoresStore

class Races(logging.Handler):
    n = 0
    def emit(self, record):
        Races.n += "lost a commit race" in record.getMessage()

logging.getLogger("lift.rescore").addHandler(Races())
logging.getLogger("lift.rescore").setLevel(logging.INFO)
store, who = sys.argv[1], sys.argv[2]
st = ScoresStore(store)
st.read_scores()  # loaded: say so, and start together
open(os.path.join(store, f"ready-{who}"), "w").close()
while not os.path.exists(os.path.join(store, "go")):
    time.sleep(0.005)
inserted = 0
for i in range(12):
    # Both writers write the keys k0..k11 (a race on every key), plus keys of their own.
    rows = [{"video_id": f"k{i}", "critic_id": "c1", "caption": "c", "reward": 0.5, "source": who,
             "scored_at": datetime.now(timezone.utc)},
            {"video_id": f"{who}-{i}", "critic_id": "c1", "caption": "c", "reward": 0.5, "source": who,
             "scored_at": datetime.now(timezone.utc)}]
    inserted += st.append_scores(rows, who, i)["inserted"]
print(json.dumps({"inserted": inserted, "races": Races.n}))
"""


def test_two_writer_processes_lose_no_row_and_duplicate_none(tmp_path):
    store = str(tmp_path / "store")
    ScoresStore(store).append_scores([_row("seed", "c1", 0.1)], "seed", 0)  # the table exists
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, store, who], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for who in ("w1", "w2")]
    deadline = time.monotonic() + 120
    while not all(os.path.exists(os.path.join(store, f"ready-{w}")) for w in ("w1", "w2")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a writer did not start"
        time.sleep(0.01)
    open(os.path.join(store, "go"), "w").close()
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    results = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    inserted = sum(r["inserted"] for r in results)
    print("commit races lost and retried:", [r["races"] for r in results])
    keys = [k[0] for k in _keys(ScoresStore(store))]
    want = {"seed", *(f"k{i}" for i in range(12)), *(f"w{w}-{i}" for w in (1, 2) for i in range(12))}
    assert len(keys) == len(want) == 37 and set(keys) == want  # none lost, none twice
    assert inserted == 36  # every shared key inserted by exactly one writer
    hist = ScoresStore(store).history()
    assert len(hist) == 1 + 1 + 24 and len({h["version"] for h in hist}) == 26  # one version per commit
