"""End-to-end rescoring runs with a real tiny critic: incremental, concurrent, crash-safe, versioned."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from lift_core import storage
from lift_core.rescore import ScoresStore, latest_trained_adapter, resolve_critic, run_rescore
from lift_core.rescore.store import SETTLED_QUARANTINE_STAGE

REPO = Path(__file__).resolve().parents[3]


def _pairs(st: ScoresStore, dedup: bool = False) -> list[tuple[str, str]]:
    t = st.read_scores(["video_id", "critic_id"], dedup=dedup)
    return list(zip(t.column("video_id").to_pylist(), t.column("critic_id").to_pylist()))


def test_second_run_scores_only_the_new_files(tmp_path, rescore_cfg, critic_a, synth_videos, write_generations,
                                              write_real_fixtures):
    gen = tmp_path / "gen"
    write_generations(gen, synth_videos[:3])
    write_real_fixtures(gen / "real")
    cfg = rescore_cfg(tmp_path)
    first = run_rescore(cfg, [str(gen)], critic_a)
    assert first.counts["new"] == 5 and first.counts["scored"] == 5 and first.counts["already_done"] == 0

    write_generations(gen, synth_videos[3:6], start=3)
    (gen / "gen-000.mp4").rename(gen / "renamed-000.mp4")  # same content, new name: not new
    second = run_rescore(cfg, [str(gen)], critic_a)
    assert second.counts["scored"] == 3 and second.counts["already_done"] == 5
    st = ScoresStore(cfg.rescore.store)
    scored_second = st.read_scores(["uri", "run_id"]).filter(pc.equal(pc.field("run_id"), second.run_id))
    assert sorted(Path(u).name for u in scored_second.column("uri").to_pylist()) == [
        "gen-003.mp4", "gen-004.mp4", "gen-005.mp4"]
    pairs = _pairs(st)
    assert len(pairs) == 8 == len(set(pairs))  # physically unique, not only after dedup
    assert {cid for _, cid in pairs} == {first.critic_id}

    third = run_rescore(cfg, [str(gen)], critic_a)
    assert third.counts["scored"] == 0 and third.counts["hashed"] == 0  # nothing reread, nothing rescored
    row = st.read_scores().to_pylist()[0]
    assert 0.0 <= row["reward"] <= 1.0 and row["generated_at"] is not None and row["source"] == "generated"


def test_corrupt_files_are_quarantined_and_the_rest_scored(tmp_path, rescore_cfg, critic_a, synth_videos,
                                                           write_generations, fixtures_dir):
    gen = tmp_path / "gen"
    write_generations(gen, synth_videos[:3])
    real = (fixtures_dir / "lift-demo/1.mp4").read_bytes()
    for name, data in {"text": b"not a video\n" * 40, "trunc": real[:4000], "zero": b""}.items():
        (gen / f"{name}.mp4").write_bytes(data)
        (gen / f"{name}.json").write_text(json.dumps({"caption": f"a {name} file"}))
    (gen / "uncaptioned.mp4").write_bytes(synth_videos[3][0])
    cfg = rescore_cfg(tmp_path)
    report = run_rescore(cfg, [str(gen)], critic_a)
    assert report.counts["scored"] == 3 and report.counts["quarantined"] == 4
    q = ScoresStore(cfg.rescore.store).read_quarantine().to_pylist()
    by_name = {Path(r["uri"]).name: r for r in q}
    assert set(by_name) == {"text.mp4", "trunc.mp4", "zero.mp4", "uncaptioned.mp4"}
    assert all(by_name[n]["stage"] == SETTLED_QUARANTINE_STAGE for n in ("text.mp4", "trunc.mp4", "zero.mp4"))
    assert "zero-byte" in by_name["zero.mp4"]["error"] and "no caption" in by_name["uncaptioned.mp4"]["error"]
    assert all(r["critic_id"] == report.critic_id and r["video_id"] for r in q)

    # Corrupt content is settled; the uncaptioned file is retried but not quarantined twice.
    again = run_rescore(cfg, [str(gen)], critic_a)
    assert again.counts["scored"] == 0 and again.counts["quarantined"] == 0 and again.counts["unusable"] == 1
    (gen / "uncaptioned.json").write_text(json.dumps({"caption": "now it has one"}))
    fixed = run_rescore(cfg, [str(gen)], critic_a)
    assert fixed.counts["scored"] == 1


def test_two_runs_started_at_once_write_no_duplicate_rows(tmp_path, rescore_cfg, critic_a, synth_videos,
                                                          write_generations):
    gen = tmp_path / "gen"
    write_generations(gen, synth_videos[:6])
    cfg = rescore_cfg(tmp_path, batch_size=2)
    barrier = threading.Barrier(2)
    reports, errors = [], []

    def run():
        barrier.wait()
        try:
            reports.append(run_rescore(cfg, [str(gen)], critic_a))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    pairs = _pairs(ScoresStore(cfg.rescore.store))
    assert len(pairs) == 6 == len(set(pairs))  # every video once: a key one run stored, the other's MERGE skipped
    assert sum(r.counts["stored"] for r in reports) == 6
    for r in reports:  # each run scored what it did not find settled by the other
        assert r.counts["stored"] <= r.counts["scored"] and r.counts["scored"] + r.counts["settled_by_other_run"] <= 6


_KILLED_RUN = """
import os, signal, sys
from lift_core.config import config_from_dict
from lift_core.rescore import run_rescore
cfg = config_from_dict({cfg!r})
def progress(fraction, message):
    if message.startswith("scored ") and "/" in message:  # the first part is committed: die hard
        os.kill(os.getpid(), signal.SIGKILL)
run_rescore(cfg, [{gen!r}], {critic!r}, progress=progress)
"""


@pytest.mark.slow
def test_a_killed_run_resumes_and_scores_every_file_exactly_once(tmp_path, rescore_cfg, critic_a, synth_videos,
                                                                  write_generations):
    gen = tmp_path / "gen"
    write_generations(gen, synth_videos[:6])
    cfg = rescore_cfg(tmp_path, batch_size=2)
    script = _KILLED_RUN.format(cfg=cfg.model_dump(mode="json"), gen=str(gen), critic=critic_a)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    st = ScoresStore(cfg.rescore.store)
    assert len(_pairs(st)) == 2  # one committed batch of three
    assert [h["lift"].get("operation") for h in st.history()] == ["rescore", "create"]

    report = run_rescore(cfg, [str(gen)], critic_a)  # nothing to break or clean: scores the rest
    assert report.counts["scored"] == 4 and report.counts["already_done"] == 2
    pairs = _pairs(st)
    assert len(pairs) == 6 == len(set(pairs))


def test_new_critic_rescore_all_keeps_old_scores(tmp_path, rescore_cfg, critic_a, critic_b, synth_videos,
                                                  write_generations):
    gen = tmp_path / "gen"
    write_generations(gen, synth_videos[:3])
    cfg = rescore_cfg(tmp_path)
    a = run_rescore(cfg, [str(gen)], critic_a)
    st = ScoresStore(cfg.rescore.store)
    old = st.read_scores(critic_id=a.critic_id).sort_by("video_id").to_pylist()

    write_generations(gen, synth_videos[3:4], start=3)
    b_new = run_rescore(cfg, [str(gen)], critic_b)  # default: only videos no critic has scored
    assert b_new.critic_id != a.critic_id and b_new.counts["scored"] == 1
    assert b_new.counts["pending_for_critic"] == 4
    b_all = run_rescore(cfg, [str(gen)], critic_b, rescore_all=True)
    assert b_all.mode == "rescore-all" and b_all.counts["scored"] == 3
    assert st.read_scores(critic_id=a.critic_id).sort_by("video_id").to_pylist() == old  # kept, untouched
    assert st.read_scores(critic_id=b_all.critic_id).num_rows == 4
    assert run_rescore(cfg, [str(gen)], critic_b, rescore_all=True).counts["scored"] == 0
    assert {r["critic_id"] for r in b_all.trend} == {a.critic_id, b_all.critic_id}


def test_latest_critic_comes_from_train_critic_outputs(tmp_path, rescore_cfg, critic_a, critic_b):
    cfg = rescore_cfg(tmp_path)
    with pytest.raises(FileNotFoundError, match="no trained critic"):
        latest_trained_adapter(cfg.run_root)
    for key, adapter, age in (("k-old", critic_a, 3600), ("k-new", critic_b, 0)):
        success = Path(cfg.run_root) / "train_critic" / key / "_SUCCESS.json"
        success.parent.mkdir(parents=True)
        success.write_text(json.dumps({"stage": "train_critic", "key": key, "out_uri": str(success.parent),
                                       "outputs": {"adapter": adapter}}))
        os.utime(success, (time.time() - age, time.time() - age))
    assert latest_trained_adapter(cfg.run_root) == critic_b
    assert resolve_critic(cfg).critic_id == resolve_critic(cfg, critic_b).critic_id != resolve_critic(cfg, critic_a).critic_id
    pinned = cfg.model_copy(update={"rescore": cfg.rescore.model_copy(update={"critic": critic_a})})
    assert resolve_critic(pinned).adapter == critic_a


def test_low_mean_reward_raises_an_alert_and_the_trend_is_drawn(tmp_path, rescore_cfg, critic_a, synth_videos,
                                                                write_generations):
    gen = tmp_path / "gen"
    write_generations(gen, synth_videos[:2])
    cfg = rescore_cfg(tmp_path, min_mean_reward=1.01)  # rewards are in [0, 1]: always below
    report = run_rescore(cfg, [str(gen)], critic_a)
    assert report.alert and "below rescore.min_mean_reward=1.01" in report.alert
    png = storage.read_bytes(report.outputs["trend_png"])
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    summary = json.loads(storage.read_text(report.outputs["summary"]))
    assert summary["counts"]["scored"] == 2 and summary["alert"] == report.alert
    (day,) = report.trend
    assert day["n"] == 2 and day["reward"] == pytest.approx(report.mean_reward)
    ok = run_rescore(rescore_cfg(tmp_path, min_mean_reward=0.0), [str(gen)], critic_a)
    assert ok.alert is None and ok.mean_reward is None  # nothing new: no batch, no alert


def test_copies_within_one_run_are_scored_once(tmp_path, rescore_cfg, critic_a, synth_videos, write_generations):
    gen = tmp_path / "gen"
    paths = write_generations(gen, synth_videos[:2])
    (gen / "sub").mkdir()
    shutil.copyfile(paths[0], gen / "sub" / "dup.mp4")
    report = run_rescore(rescore_cfg(tmp_path), [str(gen), str(gen / "sub")], critic_a)
    # sub/dup.mp4 is listed under both URIs (one file) and copies gen-000.mp4 (same content).
    assert report.counts["listed"] == 3 and report.counts["copies"] == 1 and report.counts["scored"] == 2


def test_a_watched_folder_that_does_not_exist_yet_is_nothing_to_score(tmp_path, rescore_cfg, critic_a, synth_videos,
                                                                      write_generations):
    # The scheduled run watches rescore.generations, which may not exist before the first generation.
    incoming, gen = tmp_path / "incoming", tmp_path / "gen"
    write_generations(gen, synth_videos[:2])
    cfg = rescore_cfg(tmp_path, generations=[str(incoming)], critic=critic_a)
    empty = run_rescore(cfg)
    assert empty.counts["listed"] == 0 and empty.counts["scored"] == 0 and empty.mean_reward is None
    assert empty.warnings == [f"watched location {incoming} does not exist (yet): nothing to score there"]
    assert json.loads(storage.read_text(empty.outputs["summary"]))["warnings"] == empty.warnings

    both = run_rescore(rescore_cfg(tmp_path, generations=[str(incoming), str(gen)], critic=critic_a))
    assert both.counts["scored"] == 2 and both.warnings == empty.warnings

    # A location the caller names must exist: a typo is an error, not an empty run.
    with pytest.raises(FileNotFoundError, match="generations URI not found"):
        run_rescore(cfg, [str(incoming)], critic_a)


def test_a_run_on_an_old_parquet_store_converts_it_and_trends_over_all_of_it(tmp_path, rescore_cfg, critic_a,
                                                                           synth_videos, write_generations):
    from legacy_store import write_legacy_store

    cfg = rescore_cfg(tmp_path)
    write_legacy_store(cfg.rescore.store)  # six scores of critics c1 and c2, written by the old code
    gen = tmp_path / "gen"
    write_generations(gen, synth_videos[:2])
    report = run_rescore(cfg, [str(gen)], critic_a)
    assert report.outputs["migrated"]["tables"]["scores"]["inserted"] == 6
    assert report.counts["scored"] == 2 == report.counts["stored"]
    st = ScoresStore(cfg.rescore.store)
    assert len(_pairs(st)) == 8 and st.migration is None
    # The trend reads the table at the version the run ends on: the old scores and the new.
    assert report.outputs["store_version"] == st.version() == report.outputs["versions"][-1]
    assert {r["critic_id"] for r in report.trend} == {"c1", "c2", report.critic_id}
    assert sum(r["n"] for r in report.trend) == 8
