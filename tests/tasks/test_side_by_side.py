"""Stages that do not depend on each other run side by side (``Stages`` submits them; each starts when its
inputs exist), and the GPU concurrency limit still bounds how many GPU stages run at once.

The stages are stand-ins (``fake_stages``): they record when they ran, sleep and write a real
``_SUCCESS.json``, so the real Prefect tasks, cache keys, states, artifacts and GPU slots are exercised
in a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from prefect import flow

from lift_core import storage
from lift_core.config import load_config
from lift_core.stages import STAGES, Artifact, Stage
from tasks.stages import Stages

pytestmark = pytest.mark.integration

# What each stand-in writes (the outputs lift-full's recipe reads) and how long it takes.
OUTPUTS = {"synth": ["hra_json"], "ingest": ["manifest", "prompts"], "decode": ["frames"],
           "train_critic": ["adapter"], "generate": ["generated"], "score": ["scores"], "align": ["lora"],
           "evaluate": ["report_md"], "fake_gpu": ["done"]}
LABELS = ["synth", "ingest", "decode", "train-critic", "generate-base-train", "decode-generated", "score", "align",
          "evaluate"]  # lift-full's task runs, in its recipe's order
SECONDS = {"train-critic": 2.5, "generate-base-train": 1.2, "decode-generated": 0.8}  # by task label


class Recorder:
    """Intervals (label, start, end) of the stand-ins' work, from any thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.intervals: dict[str, tuple[float, float]] = {}
        self.fail: dict[str, Exception] = {}

    def add(self, label: str, start: float, end: float) -> None:
        with self.lock:
            self.intervals[label] = (start, end)


def _label(stage: str, inputs: dict) -> str:
    if stage == "fake_gpu":
        return f"gpu-{inputs['i']}"
    if stage == "decode" and "/generate/" in str(inputs.get("manifest_uri")):
        return "decode-generated"
    return {"train_critic": "train-critic", "generate": "generate-base-train"}.get(stage, stage)


def fake_stage(stage: str, recorder: Recorder, gpus: int = 0) -> Stage:
    def stage_out(cfg, **inputs):
        key = hashlib.sha256(json.dumps([stage, inputs], sort_keys=True, default=str).encode()).hexdigest()[:16]
        return key, storage.stage_dir(cfg.run_root, stage, key)

    def run(cfg, progress=None, **inputs):
        key, out = stage_out(cfg, **inputs)
        label = _label(stage, inputs)
        start = time.monotonic()
        time.sleep(SECONDS.get(label, inputs.get("seconds", 0.1)))
        if label in recorder.fail:
            raise recorder.fail[label]
        outputs = {}
        for name in OUTPUTS[stage]:
            outputs[name] = storage.join(out, name)
            storage.write_bytes_atomic(outputs[name], f"{label} {name}".encode())
        recorder.add(label, start, time.monotonic())
        return storage.mark_success(storage.StageResult(stage, key, out, outputs, {"rows": 1}, {}))

    def summary(result):
        extra = [Artifact("report", "report", markdown="# report")] if stage == "evaluate" else []
        return [Artifact("summary", "summary", markdown=f"# {stage}"), *extra]

    return Stage(stage, run=run, stage_out=stage_out, summary=summary, gpus=lambda cfg: gpus)


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    rec = Recorder()
    for stage in OUTPUTS:
        monkeypatch.setitem(STAGES, stage, fake_stage(stage, rec, gpus=1 if stage == "fake_gpu" else 0))
    return rec


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def _most_at_once(intervals) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # an end before a start
    at, most = 0, 0
    for _, step in events:
        at += step
        most = max(most, at)
    return most


def _task_states(flow_state, expect: set[str] | None = None, timeout: float = 30.0) -> dict[str, str]:
    """Task run name -> state name of a flow run, once ``expect`` (default: all of lift-full's) are final:
    the server records task runs from their events, a moment after the flow run ended."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    expect = set(LABELS) if expect is None else expect
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id])))
        states = {r.name: r.state.name for r in runs if r.state is not None}
        if (expect <= set(states) and all(r.state.is_final() for r in runs)) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def _lift_full(tmp_path, *extra: str):
    from flows.lift_full import lift_full

    return lift_full(config="configs/demo.yaml", overrides=[f"run_root={tmp_path / 'run'}", "prefect.retries=0",
                                                            *extra], return_state=True)


def test_lift_full_trains_the_critic_while_the_base_model_generates(prefect_api, recorder, tmp_path):
    state = _lift_full(tmp_path)
    assert state.is_completed(), state.message
    results = state.result()
    assert list(results) == LABELS  # in the recipe's order, whatever order they finished in

    t = recorder.intervals
    # The critic trains alongside generation and the decoding of the generated videos...
    assert _overlap(t["train-critic"], t["generate-base-train"]) > 0.5
    assert _overlap(t["train-critic"], t["decode-generated"]) > 0.3
    # ...while every stage still waits for the stages whose outputs it takes.
    assert t["decode-generated"][0] >= t["generate-base-train"][1]
    assert t["score"][0] >= max(t["train-critic"][1], t["decode-generated"][1])
    assert t["train-critic"][0] >= t["decode"][1] and t["generate-base-train"][0] >= t["ingest"][1]
    assert t["score"][1] <= t["align"][0] and t["align"][1] <= t["evaluate"][0]
    assert _task_states(state) == dict.fromkeys(LABELS, "Completed")

    from prefect.artifacts import Artifact as PrefectArtifact

    run_table = PrefectArtifact.get("lift-full-run")
    rows = json.loads(run_table.data) if isinstance(run_table.data, str) else run_table.data
    assert [(r["task"], r["state"]) for r in rows] == [(label, "Completed") for label in LABELS]
    # The results artifact points to this run's report artifact (the plots are in it), not at worker paths.
    report = PrefectArtifact.get("lift-full-results").data
    assert "[the `evaluate-report` artifact](" in report and "/artifacts/artifact/" in report

    # A rerun is all cache hits: the stage keys, computed once the inputs exist, are the cache keys.
    again = _lift_full(tmp_path)
    assert again.is_completed(), again.message
    assert again.result() == results
    assert _task_states(again) == dict.fromkeys(LABELS, "Cached")
    # No evaluate task ran in the rerun: the link is the report key's page (its latest version).
    assert "/artifacts/key/evaluate-report" in PrefectArtifact.get("lift-full-results").data


def test_a_failed_branch_fails_the_flow_with_its_own_error(prefect_api, recorder, tmp_path):
    recorder.fail["train-critic"] = ValueError("the critic diverged")
    state = _lift_full(tmp_path)

    assert state.is_failed()
    with pytest.raises(ValueError, match="the critic diverged"):
        state.result()
    # The independent branch ran to its end (its outputs are kept for the rerun); nothing after the
    # failed stage ran.
    assert {"generate-base-train", "decode-generated"} <= set(recorder.intervals)
    assert not {"train-critic", "score", "align", "evaluate"} & set(recorder.intervals)
    states = _task_states(state, expect={"train-critic", "generate-base-train", "decode-generated"})
    assert states["train-critic"] == "Failed" and states["generate-base-train"] == "Completed"
    assert states["decode-generated"] == "Completed" and not {"score", "align", "evaluate"} & set(states)

    # The rerun does the critic again and takes the generated videos from the cache.
    del recorder.fail["train-critic"]
    again = _lift_full(tmp_path)
    assert again.is_completed(), again.message
    states = _task_states(again)
    assert states["generate-base-train"] == "Cached" and states["train-critic"] == "Completed"


@flow(name="gpu-stages-side-by-side")
def gpu_stages(cfg_dict: dict, n: int) -> dict[str, str]:
    run = Stages(cfg_dict)
    for i in range(n):  # independent: submitted together
        run._run("fake_gpu", f"gpu-{i}", seconds=0.8, i=i)
    run.wait()
    return run.states


@pytest.mark.parametrize("slots", [1, 2])
def test_gpu_stages_submitted_together_never_hold_more_slots_than_the_limit(prefect_api, recorder, tmp_path, slots):
    from prefect.client.orchestration import get_client

    name = f"lift-gpu-{uuid.uuid4().hex[:8]}"
    cfg = load_config("configs/demo.yaml", [f"run_root={tmp_path / 'run'}", f"prefect.gpu_slots={slots}",
                                            f"prefect.gpu_concurrency_limit={name}", "prefect.retries=0"])
    original = STAGES["fake_gpu"].run
    seen: list[int] = []

    def run_and_look(c, progress=None, **inputs):  # the limit's taken slots, seen from inside a stage
        with get_client(sync_client=True) as client:
            seen.append(client.read_global_concurrency_limit_by_name(name).active_slots)
        return original(c, progress=progress, **inputs)

    STAGES["fake_gpu"] = Stage("fake_gpu", run=run_and_look, stage_out=STAGES["fake_gpu"].stage_out,
                               summary=STAGES["fake_gpu"].summary, gpus=lambda c: 1)

    state = gpu_stages(cfg.model_dump(mode="json"), 3, return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == {f"gpu-{i}": "Completed" for i in range(3)}
    assert sorted(recorder.intervals) == ["gpu-0", "gpu-1", "gpu-2"]
    # Never more than the limit at once, and as many as it allows: they were submitted together.
    assert _most_at_once(recorder.intervals.values()) == slots
    assert len(seen) == 3 and max(seen) <= slots
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 0
