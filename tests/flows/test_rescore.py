"""``lift rescore`` and the ``rescore-generations`` flow: artifacts, low-reward states, the scheduled deployment."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.rescore_generations import (
    DEPLOYMENT_NAME,
    ENTRYPOINT,
    FLOW_NAME,
    SUMMARY_KEY,
    TREND_KEY,
    rescore_generations,
    scheduled_deployment,
    scheduled_deployment_spec,
)
from lift_core.config import load_config
from lift_core.rescore import ScoresStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_overrides(tmp_path, critic_base, critic_a):
    """Overrides of configs/demo.yaml: a tiny decode, the test critic, everything under tmp_path."""
    return [f"run_root={tmp_path / 'run'}", f"critic.model={critic_base}", "critic.build_tiny=null",
            f"rescore.critic={critic_a}", "decode.frames=4", "decode.height=56", "decode.width=56"]


# --------------------------------------------------------------------------- CLI
def test_cli_rescore_is_incremental_and_signals_low_reward(tmp_path, demo_overrides, synth_videos, write_generations):
    gen = tmp_path / "gen"
    write_generations(gen, synth_videos[:2])
    runner = CliRunner()
    args = ["rescore", "--generations", str(gen), "--config", str(REPO / "configs/demo.yaml"), *demo_overrides]
    first = runner.invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert out["counts"]["scored"] == 2 and out["alert"] is None
    assert out["outputs"]["store"] == str(tmp_path / "run/scores_store")  # the default store: under run_root

    write_generations(gen, synth_videos[2:3], start=2)
    low = runner.invoke(app, [*args, "rescore.min_mean_reward=1.01"], catch_exceptions=False)
    assert low.exit_code == 3, low.output
    assert "below rescore.min_mean_reward=1.01" in low.stderr
    assert json.loads(low.stdout)["counts"]["scored"] == 1  # scored and stored before signalling
    assert ScoresStore(str(tmp_path / "run/scores_store")).read_scores().num_rows == 3


def test_cli_errors_are_one_line(tmp_path, demo_overrides):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "rescore", "--generations", str(tmp_path / "nowhere"),
         "--config", "configs/demo.yaml", *demo_overrides],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("lift: error: generations URI not found")


# --------------------------------------------------------------------------- flow (a temporary Prefect server)
@pytest.fixture(scope="module")
def prefect_server():
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


async def _artifacts(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


@pytest.mark.slow
def test_flow_publishes_artifacts_and_fails_on_low_reward(prefect_server, tmp_path, demo_overrides, synth_videos,
                                                          write_generations):
    gen = tmp_path / "gen"
    write_generations(gen, synth_videos[:2])
    state = rescore_generations(config="configs/demo.yaml", overrides=demo_overrides, generations=[str(gen)],
                                return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert report["counts"]["scored"] == 2
    arts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    table = json.loads(arts[SUMMARY_KEY].data) if isinstance(arts[SUMMARY_KEY].data, str) else arts[SUMMARY_KEY].data
    values = {r["metric"]: r["value"] for r in table}
    assert values["new videos"] == 2 and values["scored"] == 2 and values["quarantined"] == 0
    assert values["reward overall mean"] == pytest.approx(report["mean_reward"])
    assert "data:image/png;base64," in arts[TREND_KEY].data

    write_generations(gen, synth_videos[2:3], start=2)
    failed = rescore_generations(config="configs/demo.yaml", overrides=[*demo_overrides, "rescore.min_mean_reward=1.01"],
                                 generations=[str(gen)], return_state=True)
    assert failed.is_failed()
    assert failed.message.startswith("Low reward: mean reward") and "min_mean_reward=1.01" in failed.message

    write_generations(gen, synth_videos[3:4], start=3)
    warned = rescore_generations(
        config="configs/demo.yaml", generations=[str(gen)], return_state=True,
        overrides=[*demo_overrides, "rescore.min_mean_reward=1.01", "rescore.fail_on_low_reward=false"])
    assert warned.is_completed() and warned.name == "Warning" and "Low reward" in warned.message


@pytest.mark.slow
def test_a_watched_folder_not_created_yet_completes_with_nothing_to_score(prefect_server, demo_overrides):
    # The scheduled run's first hour after the demo: rescore.generations ({run_root}/incoming) may not exist.
    state = rescore_generations(config="configs/demo.yaml", overrides=demo_overrides, return_state=True)
    assert state.is_completed() and state.name == "Completed", state.message
    assert state.message.startswith("Nothing to score: watched location") and "incoming" in state.message
    report = state.result()
    assert report["counts"]["listed"] == 0 and report["counts"]["scored"] == 0 and len(report["warnings"]) == 1
    arts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    table = json.loads(arts[SUMMARY_KEY].data) if isinstance(arts[SUMMARY_KEY].data, str) else arts[SUMMARY_KEY].data
    assert {"metric": "warning", "value": report["warnings"][0]} in table
    assert f"**Warning:** {report['warnings'][0]}" in arts[TREND_KEY].data


def test_the_retry_condition_retries_only_transient_errors():
    """A missing folder or a config error fails at once: a retry cannot create the folder."""
    from prefect.states import Failed

    from flows.rescore_generations import _retry_on_io_errors
    from lift_core.config import ConfigError
    from lift_core.rescore.store import StoreBusy

    def retried(err: BaseException) -> bool:
        return _retry_on_io_errors(None, None, Failed(data=err))

    assert retried(ConnectionResetError("connection reset by peer")) and retried(TimeoutError("read timed out"))
    assert not retried(FileNotFoundError("generations URI not found: /runs/demo/incoming"))
    assert not retried(PermissionError("denied")) and not retried(ConfigError("rescore.store: bad"))
    assert not retried(StoreBusy("other writers kept committing to the store"))


# --------------------------------------------------------------------------- the scheduled deployment
def _yaml_entry() -> dict:
    """The rescore-generations/scheduled entry of prefect.yaml: deleting it fails every test that reads it."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    entries = [d for d in spec.get("deployments") or []
               if d.get("name") == DEPLOYMENT_NAME and d.get("entrypoint") == ENTRYPOINT]
    assert len(entries) == 1, f"prefect.yaml must deploy {FLOW_NAME}/{DEPLOYMENT_NAME} ({ENTRYPOINT}) once"
    return entries[0]


def test_prefect_yaml_entry_matches_the_config_cron():
    entry = _yaml_entry()
    want = scheduled_deployment_spec("configs/demo.yaml")
    assert entry["schedules"][0]["cron"] == load_config(REPO / "configs/demo.yaml").rescore.cron
    assert entry["concurrency_limit"] == want["concurrency_limit"]
    assert entry["parameters"]["config"] == "configs/demo.yaml"


@pytest.mark.slow
def test_deployment_is_registered_with_its_schedule(prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        if not any(p.name == "local" for p in client.read_work_pools()):
            client.create_work_pool(WorkPoolCreate(name="local", type="process"))
    _yaml_entry()
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "LIFT_REPO": str(REPO)}
    proc = subprocess.run([str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy",
                           "--prefect-file", str(REPO / "prefect.yaml"), "--name", f"{FLOW_NAME}/{DEPLOYMENT_NAME}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(f"{FLOW_NAME}/{DEPLOYMENT_NAME}")
    cron = load_config(REPO / "configs/demo.yaml").rescore.cron
    assert [s.schedule.cron for s in dep.schedules] == [cron] and all(s.active for s in dep.schedules)
    assert dep.schedules[0].schedule.timezone == "UTC"
    assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1
    assert dep.concurrency_options is not None and dep.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert dep.entrypoint.endswith("rescore_generations.py:rescore_generations")
    assert dep.parameters["config"] == "configs/demo.yaml"


def test_python_deployment_matches_the_spec():
    """``scheduled_deployment`` (for a cron changed in config, without editing prefect.yaml) says the same."""
    dep = scheduled_deployment("configs/demo.yaml")
    spec = scheduled_deployment_spec("configs/demo.yaml")
    assert dep.name == DEPLOYMENT_NAME and dep.entrypoint.endswith(ENTRYPOINT.split("/", 1)[1])
    assert [s.schedule.cron for s in dep.schedules] == [spec["schedules"][0]["cron"]]
    assert dep.concurrency_limit == 1 and dep.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert dep.parameters == spec["parameters"]
