"""One real local Prefect stack (SQLite server + process worker) and one tiny lift-full run for the session.

The stack is started through infra/local_stack.py exactly as `make demo` does, on a free loopback
port with its PREFECT_HOME in a temporary folder; every test that needs a server or a finished run
shares these. ``local_stack`` is that module; ``stack_tools`` holds the tiny config and the API and
output helpers the stack tests share.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lift_core.config import read_overrides_file

REPO = Path(__file__).resolve().parents[2]

# Every stage at its smallest, on the shipped demo bases as the demo runs (the file says what it holds).
TINY = read_overrides_file(REPO / "configs/demo-tiny.overrides")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StackTools:
    """The tiny lift-full run's parameters and what the stack tests read back from the server and the run root."""

    STAGES = ("synth", "ingest", "decode", "train_critic", "generate", "score", "align", "evaluate")
    # The task runs of lift-full (their labels): decode and generate run on two inputs each.
    TASKS = {"synth", "ingest", "decode", "train-critic", "generate-base-train", "decode-generated", "score", "align",
             "evaluate"}

    def __init__(self, local_stack: ModuleType):
        self.local_stack = local_stack
        self.free_port = free_port

    @staticmethod
    def params(run_root: Path | str, *extra: str) -> dict[str, Any]:
        return {"config": "configs/demo.yaml", "overrides": [f"run_root={run_root}", *TINY, *extra]}

    @staticmethod
    def tree_digest(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
        """relative path -> sha256 of every file under ``root`` (a changed or new byte shows)."""
        out = {}
        for p in sorted(root.rglob("*")):
            rel = str(p.relative_to(root))
            if p.is_file() and not any(rel.startswith(e) for e in exclude):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    def artifacts(self, env: dict[str, str], flow_run_id: str) -> dict[str, dict[str, Any]]:
        found = self.local_stack.api(env, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
        return {a["key"]: a for a in found if a.get("key")}

    def task_states(self, env: dict[str, str], flow_run_id: str, expect: int | None = None,
                    timeout: float = 60.0) -> dict[str, str]:
        """Task run name -> state name, once ``expect`` (default: all of lift-full's) task runs are final.

        The server records task run states from events, a moment after the flow run itself ends.
        """
        expect = len(self.TASKS) if expect is None else expect
        deadline = time.monotonic() + timeout
        while True:
            runs = self.local_stack.task_runs(env, flow_run_id)
            final = [t for t in runs if t.get("state") and t["state"]["type"] in self.local_stack.TERMINAL]
            if len(final) >= expect or time.monotonic() > deadline:
                return {t["name"]: t["state"]["name"] if t.get("state") else None for t in runs}
            time.sleep(1.0)

    def run_table(self, env: dict[str, str], flow_run_id: str) -> list[dict[str, Any]]:
        """The rows of a lift-full run's ``lift-full-run`` table artifact: task, stage, state, key, counts, output."""
        data = self.artifacts(env, flow_run_id)["lift-full-run"]["data"]
        return json.loads(data) if isinstance(data, str) else data

    def run_outputs(self, env: dict[str, str], flow_run_id: str, run_root: Path) -> dict[str, Path]:
        """task label -> the stage output folder that task of this flow run produced (or found)."""
        return {r["task"]: run_root / r["stage"] / r["key"] for r in self.run_table(env, flow_run_id)}


def _load_local_stack() -> ModuleType:
    """infra/local_stack.py (a script folder, not a package), loaded once from its path."""
    spec = importlib.util.spec_from_file_location("local_stack", REPO / "infra" / "local_stack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def local_stack() -> ModuleType:
    return _load_local_stack()


@pytest.fixture(scope="session")
def stack_tools(local_stack) -> StackTools:
    return StackTools(local_stack)


@dataclass
class DemoRun:
    env: dict[str, str]
    run_root: Path
    flow_run_id: str
    state: str
    params: dict[str, Any]


@pytest.fixture(scope="session")
def stack(local_stack, tmp_path_factory):
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
def demo_run(local_stack, stack, tmp_path_factory) -> DemoRun:
    """lift-full/lift-full triggered through the `prefect` CLI on the tiny config, waited for."""
    run_root = tmp_path_factory.mktemp("lift-demo") / "run"
    p = StackTools.params(run_root)
    run_id, state = local_stack.run_deployment(stack, params=p, timeout=840)
    return DemoRun(stack, run_root, run_id, state, p)
