"""A real local Prefect server and process worker; lift-full/lift-full is run through the `prefect` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lift_core.config import SplitConfig
from lift_core.video.synth import caption_split, caption_text, combinations

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def table(artifact: dict) -> list[dict]:
    data = artifact["data"]
    return json.loads(data) if isinstance(data, str) else data


def test_deployment_run_completes_with_every_stage_output(demo_run, local_stack, stack_tools):
    env, root, tools = demo_run.env, demo_run.run_root, stack_tools
    run = local_stack.flow_run(env, demo_run.flow_run_id)
    assert demo_run.state == "COMPLETED", (run["state"], (root.parent / "worker.log"))
    assert run["deployment_id"] and run["parameters"] == demo_run.params
    assert tools.task_states(env, demo_run.flow_run_id) == {name: "Completed" for name in tools.TASKS}

    outputs = tools.run_outputs(env, demo_run.flow_run_id, root)
    assert set(outputs) == tools.TASKS
    for task, out in outputs.items():
        success = json.loads((out / "_SUCCESS.json").read_text())
        assert success["key"] == out.name
        for name, uri in success["outputs"].items():
            assert Path(uri).exists(), (task, name, uri)
    assert {p.parent.parent.name for p in root.glob("*/*/_SUCCESS.json")} >= set(tools.STAGES)
    ingest = json.loads((outputs["ingest"] / "_SUCCESS.json").read_text())["counts"]
    # 8 generation prompts, then every validation and held-out test caption of the grammar
    held_apart = sum(caption_split(caption_text(*c), SplitConfig()) != "train" for c in combinations())
    assert ingest["videos_lift-hra"] == 24 and ingest["videos_hd-vila"] == 4 and ingest["prompts"] == 8 + held_apart
    decoded = json.loads((outputs["decode"] / "_SUCCESS.json").read_text())["counts"]
    assert decoded["decoded"] == 28 and decoded["quarantined"] == 0
    scores = json.loads((outputs["score"] / "_SUCCESS.json").read_text())["counts"]
    assert scores["rows"] == 4 + 2  # the real set and the two generated videos
    critic = json.loads((outputs["train-critic"] / "metrics.json").read_text())
    assert critic["steps"] == 2 and {"semantic", "fidelity", "motion"} <= set(critic)
    assert (outputs["evaluate"] / "report.md").read_text().startswith("# LiFT evaluation")

    found = tools.artifacts(env, demo_run.flow_run_id)
    expected = {"synth-summary", "ingest-summary", "decode-summary", "decode-generated-summary",
                "train-critic-summary", "train-critic-metrics", "generate-base-train-summary", "score-summary",
                "score-rewards", "align-summary", "evaluate-summary", "evaluate-report", "lift-full-run",
                "decode-progress", "train-critic-progress", "score-progress", "align-progress", "evaluate-progress",
                "lift-full-results"}
    assert expected <= set(found), sorted(expected - set(found))
    # What the run found, in the UI and in `make demo`'s terminal, from the same stage outputs.
    results = found["lift-full-results"]["data"]
    assert "## Critic agreement" in results and "## Base vs aligned" in results and "| critic reward |" in results
    assert str(outputs["evaluate"] / "report.md") in results and f"flow-run/{demo_run.flow_run_id}" in results
    text = local_stack.results(env, demo_run.flow_run_id, "http://ui")
    assert all(f"\n  {dim} " in text for dim in ("semantic", "fidelity", "motion"))
    assert str(outputs["evaluate"] / "report.md") in text and str(outputs["evaluate"] / "plots") in text
    assert found["train-critic-progress"]["data"] == 100.0
    report = found["evaluate-report"]["data"]
    assert report.count("](data:image/png;base64,") == 4  # the four plots (frames, rewards, dimensions, loss) travel inside the artifact
    metrics_rows = table(found["train-critic-metrics"])
    assert [r["dimension"] for r in metrics_rows] == ["semantic", "fidelity", "motion"]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["majority_label"] in ("Good", "Normal", "Bad") for r in metrics_rows)
    assert {(r["source"], r["dimension"]) for r in table(found["score-rewards"])} >= {
        ("hd-vila", "overall"), ("generated", "overall"), ("hd-vila", "semantic")}


def test_second_run_is_all_cache_hits_with_identical_outputs(demo_run, local_stack, stack_tools):
    env, root, tools = demo_run.env, demo_run.run_root, stack_tools
    assert demo_run.state == "COMPLETED"
    before = tools.tree_digest(root, exclude=("_prefect",))
    run_id, state = local_stack.run_deployment(env, params=demo_run.params, timeout=300)
    assert state == "COMPLETED"
    assert tools.task_states(env, run_id) == {name: "Cached" for name in tools.TASKS}
    assert tools.tree_digest(root, exclude=("_prefect",)) == before  # nothing rewritten, byte for byte
    rows = tools.run_table(env, run_id)
    assert {r["task"]: r["state"] for r in rows} == {name: "Cached" for name in tools.TASKS}
    assert [r["key"] for r in rows] == [r["key"] for r in tools.run_table(env, demo_run.flow_run_id)]


def test_scheduled_rescore_after_lift_full_completes_with_rows_in_the_store(demo_run, local_stack, stack_tools):
    """What a user sees next: rescore-generations/scheduled, run right after lift-full on the same config,
    finds the evaluation's published generations in the watched folder and ends Completed with scores."""
    from lift_core.rescore.store import ScoresStore

    env, root = demo_run.env, demo_run.run_root
    assert demo_run.state == "COMPLETED"
    incoming = root / "incoming"
    published = sorted(incoming.glob("aligned_*.mp4"))
    assert published and json.loads((incoming / "captions.json").read_text()).keys() >= {p.name for p in published}
    params = {"config": demo_run.params["config"], "overrides": demo_run.params["overrides"], "rescore_all": False}
    run_id, state = local_stack.run_deployment(env, local_stack.RESCORE_DEPLOYMENT, params=params, timeout=600)
    assert state == "COMPLETED", (root.parent / "worker.log")
    scores = ScoresStore(str(root / "scores_store")).read_scores()
    assert scores.num_rows == len(published)
    assert set(scores.column("caption").to_pylist()) <= set(json.loads((incoming / "captions.json").read_text()).values())
