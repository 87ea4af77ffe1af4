"""Crash-resumable DAG: the worker is killed while the score stage runs, the deployment is triggered again.

Completed stages come back as cache hits, scoring resumes from the shards the killed run wrote, and
the final scores equal an uninterrupted scoring of the same inputs: same rows, no duplicate ids,
same rewards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]

# Score the rated set too (30 videos, one per batch and per shard), so the kill lands mid-stage.
RESCORE = ["score.sources=[hd-vila, generated, lift-hra]", "score.batch_size=1", "score.rows_per_shard=1"]
UPSTREAM = ("synth", "ingest", "decode", "train-critic", "generate-base-train", "decode-generated")


def _wait_for_partial_scores(local_stack, root: Path, known: set[Path], run_id: str, env, timeout: float = 420) -> Path:
    """The new score stage's folder once it holds a shard and no _SUCCESS.json yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in (root / "score").glob("*"):
            if d not in known and list(d.glob("scores.parquet.parts/part-*.parquet")):
                assert not (d / "_SUCCESS.json").exists(), "scoring finished before the kill"
                return d
        state = local_stack.flow_run(env, run_id)["state_type"]
        assert state not in local_stack.TERMINAL, f"the run ended {state} before scoring started"
        time.sleep(0.05)
    raise AssertionError("no score shard appeared")


def _reference_scores(cfg, out: Path, manifests, frames, adapter) -> Path:
    """The same scoring without any interruption, in this process."""
    from lift_core.critic.score_stage import score_manifests

    scores = out / "scores.parquet"
    score_manifests(cfg, manifests, frames, adapter, str(scores))
    return scores


def test_killed_worker_during_scoring_resumes_to_the_uninterrupted_result(demo_run, local_stack, stack_tools, tmp_path,
                                                                           ray_session):
    env, root, tools = demo_run.env, demo_run.run_root, stack_tools
    assert demo_run.state == "COMPLETED"
    home, port = Path(env["LIFT_STACK_HOME"]), int(env["PREFECT_SERVER_API_PORT"])
    known = set((root / "score").glob("*"))
    p = tools.params(root, *RESCORE)

    crashed_id = local_stack.trigger(env, params=p)
    partial = _wait_for_partial_scores(local_stack, root, known, crashed_id, env)
    killed = local_stack.kill_worker(home)
    assert len(killed) >= 2  # the worker and the flow run it was executing (and its Ray processes)
    shards_at_kill = len(list(partial.glob("scores.parquet.parts/part-*.parquet")))
    assert local_stack.flow_run(env, crashed_id)["state_type"] == "RUNNING"  # nobody told the server

    local_stack.up(port, home)  # a new worker; the orphaned run is marked Crashed
    assert local_stack.flow_run(env, crashed_id)["state_type"] == "CRASHED"
    run_id, state = local_stack.run_deployment(env, params=p, timeout=900)
    assert state == "COMPLETED", local_stack.flow_run(env, run_id)["state"]

    states = tools.task_states(env, run_id)
    assert {t: states[t] for t in UPSTREAM} == dict.fromkeys(UPSTREAM, "Cached")
    assert {t: states[t] for t in ("score", "align", "evaluate")} == dict.fromkeys(("score", "align", "evaluate"),
                                                                                 "Completed")
    success = json.loads((partial / "_SUCCESS.json").read_text())
    assert success["counts"]["resumed"] >= shards_at_kill >= 1  # what the killed run scored was kept
    assert success["counts"]["scored"] + success["counts"]["resumed"] == success["counts"]["rows"] == 30
    assert not (partial / "scores.parquet.parts").exists() or not list((partial / "scores.parquet.parts").glob("*"))

    # The uninterrupted reference: the same inputs scored in one go.
    from lift_core.config import load_config

    first, resumed = tools.run_outputs(env, demo_run.flow_run_id, root), tools.run_outputs(env, run_id, root)
    assert resumed["score"] == partial and all(resumed[t] == first[t] for t in UPSTREAM)
    cfg = load_config(REPO / "configs/demo.yaml", p["overrides"])
    manifests = [str(first["ingest"] / "manifest.parquet"), str(first["generate-base-train"] / "generated.parquet")]
    frames = [str(first["decode"] / "frames"), str(first["decode-generated"] / "frames")]
    ref = pq.read_table(_reference_scores(cfg, tmp_path, manifests, frames, str(first["train-critic"] / "adapter")))
    got = pq.read_table(partial / "scores.parquet")
    assert got.num_rows == ref.num_rows == 30
    ids = got.column("video_id").to_pylist()
    assert len(set(ids)) == len(ids)  # no duplicates from the two attempts
    got, ref = got.sort_by("video_id"), ref.sort_by("video_id")
    assert got.column("video_id").to_pylist() == ref.column("video_id").to_pylist()
    for col in ("reward", "reward_lift", "p_good_semantic", "p_bad_motion", "reward_fidelity"):
        np.testing.assert_allclose(got.column(col).to_numpy(), ref.column(col).to_numpy(), rtol=0, atol=1e-5)
    assert got.column("label_semantic").to_pylist() == ref.column("label_semantic").to_pylist()

    # Downstream of the resumed stage: the same row counts as the uninterrupted first run.
    assert pq.read_metadata(resumed["align"] / "samples.parquet").num_rows == \
        pq.read_metadata(first["align"] / "samples.parquet").num_rows
    assert pq.read_metadata(resumed["evaluate"] / "eval.parquet").num_rows == \
        pq.read_metadata(first["evaluate"] / "eval.parquet").num_rows
