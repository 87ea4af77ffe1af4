"""The schedule of ``rescore-generations/scheduled`` comes from ``rescore.cron`` of the config it runs:
``local_stack.deploy`` (``make demo``) registers prefect.yaml, then sets the deployed schedule from the
deployment's ``config`` and ``overrides`` parameters; ``local_stack.py schedule`` does the same after a
``prefect deploy`` of one's own (the docker-compose stack)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lift_core.config import load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NAME = "rescore-generations/scheduled"


@pytest.fixture(scope="module")
def server_env():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name="local", type="process"))
        yield {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "LIFT_REPO": str(REPO)}


def _schedules(local_stack, env) -> list[tuple[str, str, bool]]:
    dep = local_stack.api(env, f"/deployments/name/{NAME}")
    return [(s["schedule"]["cron"], s["schedule"]["timezone"], s["active"]) for s in dep["schedules"]]


def test_the_deployed_schedule_is_rescore_cron_of_the_deployments_config(local_stack, server_env):
    env = server_env
    entry = next(d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
                 if d["name"] == "scheduled")
    demo = load_config(REPO / entry["parameters"]["config"]).rescore
    assert entry["schedules"][0]["cron"] == demo.cron  # what `prefect deploy` registers first

    local_stack.deploy(env, names=[NAME])
    assert _schedules(local_stack, env) == [(demo.cron, demo.timezone, True)]

    # Another cron in the config the deployment runs (here: its overrides parameter) is the schedule
    # after a sync; the deployment keeps one schedule, still active.
    dep = local_stack.api(env, f"/deployments/name/{NAME}")
    overrides = ["rescore.cron=15 */2 * * *", "rescore.timezone=Europe/Paris"]
    local_stack.api(env, f"/deployments/{dep['id']}",
                    {"parameters": {**dep["parameters"], "overrides": overrides}}, method="PATCH")
    assert local_stack.sync_rescore_schedule(env) == {"cron": "15 */2 * * *", "timezone": "Europe/Paris"}
    assert _schedules(local_stack, env) == [("15 */2 * * *", "Europe/Paris", True)]
    again = local_stack.api(env, f"/deployments/name/{NAME}")["schedules"]
    assert local_stack.sync_rescore_schedule(env)["cron"] == "15 */2 * * *"
    assert local_stack.api(env, f"/deployments/name/{NAME}")["schedules"] == again  # in step: left alone

    # The command for a stack deployed by hand, through the environment's API URL.
    proc = subprocess.run([sys.executable, str(REPO / "infra" / "local_stack.py"), "schedule"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    missing = subprocess.run([sys.executable, str(REPO / "infra" / "local_stack.py"), "schedule"],
                             env={k: v for k, v in env.items() if k != "PREFECT_API_URL"},
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "PREFECT_API_URL" in missing.stderr


def test_nothing_to_sync_when_the_deployment_is_not_there(local_stack, server_env):
    env = {**server_env}
    assert local_stack.sync_rescore_schedule(env, name="rescore-generations/not-deployed") is None
