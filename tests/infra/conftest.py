"""One real local Prefect stack (SQLite server + process worker) and one tiny lift-full run for the session.

The stack is started through infra/local_stack.py exactly as `make demo` does, on a free loopback
port with its PREFECT_HOME in a temporary folder; every test that needs a server or a finished run
shares these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lift_stack_helpers import free_port, local_stack, params


@dataclass
class DemoRun:
    env: dict[str, str]
    run_root: Path
    flow_run_id: str
    state: str
    params: dict[str, Any]


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-stack")
    env = local_stack.up(free_port(), home)
    try:
        local_stack.deploy(env)  # every deployment of prefect.yaml, as `make demo` does
        # The hourly rescoring schedule must not start runs on this worker in the middle of the tests.
        dep = local_stack.api(env, "/deployments/name/rescore-generations/scheduled")
        local_stack.api(env, f"/deployments/{dep['id']}", {"paused": True}, method="PATCH")
        env["LIFT_STACK_HOME"] = str(home)
        yield env
    finally:
        local_stack.down(home)


@pytest.fixture(scope="session")
def demo_run(stack, tmp_path_factory) -> DemoRun:
    """lift-full/lift-full triggered through the `prefect` CLI on the tiny config, waited for."""
    run_root = tmp_path_factory.mktemp("lift-demo") / "run"
    p = params(run_root)
    run_id, state = local_stack.run_deployment(stack, params=p, timeout=840)
    return DemoRun(stack, run_root, run_id, state, p)
