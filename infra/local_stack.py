#!/usr/bin/env python
"""The embedded default stack: a local Prefect server (SQLite, 127.0.0.1) and a process worker.

    python infra/local_stack.py demo --config configs/demo.yaml --port 4200   # start, deploy, run, wait
    python infra/local_stack.py up --port 4200                                # start server + worker only
    python infra/local_stack.py down                                          # stop what was started

State (PREFECT_HOME, logs, pids) lives in .prefect-local/ of the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".prefect-local"
PIDS = STATE / "pids.json"
POOL = "local"


def stack_env(port: int, home: Path = STATE) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home / "home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_UI_URL=f"http://127.0.0.1:{port}",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL=env.get("PREFECT_LOGGING_LEVEL", "INFO"),
        LIFT_REPO=str(REPO),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    )
    return env


def prefect_bin() -> str:
    cand = Path(sys.executable).with_name("prefect")
    return str(cand) if cand.exists() else "prefect"


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _spawn(args: list[str], env: dict[str, str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def _load_pids() -> dict[str, int]:
    return json.loads(PIDS.read_text()) if PIDS.exists() else {}


def _save_pids(pids: dict[str, int]) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    PIDS.write_text(json.dumps(pids))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def up(port: int, home: Path = STATE, timeout: float = 120.0) -> dict[str, str]:
    env = stack_env(port, home)
    pids = _load_pids()
    if not healthy(port):
        pids["server"] = _spawn([prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env, home / "server.log")
        _save_pids(pids)
        deadline = time.monotonic() + timeout
        while not healthy(port):
            if time.monotonic() > deadline:
                raise SystemExit(f"prefect server did not become healthy on port {port}; see {home / 'server.log'}")
            time.sleep(1.0)
    subprocess.run([prefect_bin(), "work-pool", "create", POOL, "--type", "process"], env=env, cwd=REPO,
                   capture_output=True)
    if not (pids.get("worker") and _alive(pids["worker"])):
        pids["worker"] = _spawn([prefect_bin(), "worker", "start", "--pool", POOL, "--type", "process"],
                                env, home / "worker.log")
        _save_pids(pids)
    return env


def deploy(env: dict[str, str]) -> None:
    subprocess.run([prefect_bin(), "--no-prompt", "deploy", "--all"], env=env, cwd=REPO, check=True)


def run_deployment(env: dict[str, str], name: str = "lift-full/lift-full", params: list[str] | None = None,
                   timeout: float = 3600.0) -> tuple[str, str]:
    """Trigger a deployment through the CLI, wait for it, return (flow_run_id, final state name)."""
    args = [prefect_bin(), "deployment", "run", name]
    for p in params or []:
        args += ["--param", p]
    out = subprocess.run(args, env=env, cwd=REPO, check=True, capture_output=True, text=True).stdout
    print(out)
    import re

    match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    if not match:
        raise SystemExit(f"could not find the flow run id in `prefect deployment run` output:\n{out}")
    run_id = match.group(1)
    deadline = time.monotonic() + timeout
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        state = flow_run_state(env, run_id)
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(3.0)
    return run_id, state


def flow_run_state(env: dict[str, str], run_id: str) -> str:
    req = urllib.request.Request(f"{env['PREFECT_API_URL']}/flow_runs/{run_id}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["state_type"]


def down() -> None:
    pids = _load_pids()
    for name in ("worker", "server"):
        pid = pids.get(name)
        if not pid:
            continue
        for target in (lambda: os.killpg(pid, signal.SIGTERM), lambda: os.kill(pid, signal.SIGTERM)):
            try:
                target()
            except OSError:
                pass
    time.sleep(1.0)
    for pid in pids.values():
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    PIDS.unlink(missing_ok=True)
    print("local stack stopped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["demo", "up", "down"])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--port", type=int, default=int(os.environ.get("PREFECT_PORT", 4200)))
    args = ap.parse_args()
    if args.command == "down":
        down()
        return
    env = up(args.port)
    print(f"Prefect UI: http://127.0.0.1:{args.port}")
    if args.command == "up":
        return
    deploy(env)
    run_id, state = run_deployment(env, params=[f"config={args.config}"])
    print(f"lift-full flow run {run_id} finished in state {state}")
    print(f"Prefect UI: http://127.0.0.1:{args.port}/runs/flow-run/{run_id}   (stop with `make down`)")
    if state != "COMPLETED":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
