#!/usr/bin/env python
"""The embedded default stack: a local Prefect server (SQLite, 127.0.0.1) and a process worker.

    python infra/local_stack.py demo --config configs/demo.yaml --port 4200   # start, deploy, run, wait
    python infra/local_stack.py up --port 4200                                # server + worker only
    python infra/local_stack.py down                                          # stop what was started
    python infra/local_stack.py schedule     # after `prefect deploy` against any server (PREFECT_API_URL)

State lives in ``.prefect-local/`` of the checkout: ``home/`` (PREFECT_HOME, with the SQLite
database), ``server.log``, ``worker.log`` and ``pids.json``. The demo writes its outputs where its
config says (``./runs/demo/`` for configs/demo.yaml). ``demo`` leaves the server and the worker
running so the UI can be browsed; ``down`` stops them.

Idempotent: ``up``/``demo`` reuse a healthy server on the port and a live worker. A worker that died
(killed, machine restarted) is replaced, and flow runs it left ``Running`` are marked ``Crashed``,
so triggering the deployment again resumes the pipeline from its cache and partial outputs.

The schedule of ``rescore-generations/scheduled`` is ``rescore.cron`` (and ``rescore.timezone``) of the
config that deployment runs (its ``config`` and ``overrides`` parameters): after ``prefect deploy``
registers prefect.yaml's default, ``deploy`` sets the deployed schedule from that config
(``sync_rescore_schedule``); ``schedule`` does only that, against the server of PREFECT_API_URL (with
PREFECT_API_AUTH_STRING where the server wants one: the docker-compose stack).

``up`` and ``down`` need only the standard library and psutil (processes, their start times and
children on any OS, without ``/proc``), so they run before the pipeline is importable; ``demo``
also reads the run back through ``lift_core`` (installed by then): progress bars from the tasks'
progress artifacts while it waits, and the results summary when the run ends.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".prefect-local"
POOL = "local"
DEPLOYMENT = "lift-full/lift-full"
RESCORE_DEPLOYMENT = "rescore-generations/scheduled"
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


# --------------------------------------------------------------------------- environment
def stack_env(port: int, home: Path = STATE, extra: dict[str, str] | None = None,
              database_url: str | None = None) -> dict[str, str]:
    """The environment of every process of the stack (server, worker, CLI calls).

    The database is SQLite in ``home`` unless ``database_url`` (or LIFT_PREFECT_DATABASE_URL) names
    another, e.g. ``postgresql+asyncpg://user@127.0.0.1:5432/prefect``.
    """
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home / "home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_UI_URL=f"http://127.0.0.1:{port}",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=database_url or env.get(
            "LIFT_PREFECT_DATABASE_URL", f"sqlite+aiosqlite:///{home / 'home' / 'prefect.db'}"),
        PREFECT_LOGGING_LEVEL=env.get("PREFECT_LOGGING_LEVEL", "INFO"),
        LIFT_REPO=str(REPO),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    )
    env.update(extra or {})
    return env


def prefect_bin() -> str:
    cand = Path(sys.executable).with_name("prefect")
    return str(cand) if cand.exists() else "prefect"


def api(env: dict[str, str], path: str, body: Any = None, method: str | None = None, timeout: float = 30.0) -> Any:
    """One call of the Prefect REST API (JSON in, JSON out)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if env.get("PREFECT_API_AUTH_STRING"):  # as Prefect's client sends it (a server with an auth string)
        headers["Authorization"] = "Basic " + base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()
    req = urllib.request.Request(f"{env['PREFECT_API_URL']}{path}", data=data,
                                 method=method or ("POST" if body is not None else "GET"), headers=headers)
    for attempt in range(6):
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
            return json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            # A busy or just-started server answers 503 for a moment: retry; other errors are real.
            if err.code != 503 or attempt == 5:
                raise
        except urllib.error.URLError:
            if attempt == 5:
                raise
        time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


# --------------------------------------------------------------------------- processes
def _process(pid: int):
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.Error:  # gone, or not ours to see
        return None


def _start_time(pid: int) -> float | None:
    """The process's start time (seconds since the epoch, to 10 ms): tells a pid from a reused one."""
    import psutil

    proc = _process(pid)
    try:
        return round(proc.create_time(), 2) if proc is not None else None
    except psutil.Error:
        return None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (flow-run subprocesses start their own sessions: a group kill misses them)."""
    import psutil

    proc = _process(pid)
    try:
        return [child.pid for child in proc.children(recursive=True)] if proc is not None else []
    except psutil.Error:
        return []


def _record(pid: int) -> dict[str, float | int | None]:
    return {"pid": pid, "start": _start_time(pid)}


def _alive(rec: dict[str, Any] | None) -> bool:
    """The recorded process still runs (same pid and start time; a zombie awaiting its parent is dead)."""
    return bool(rec) and rec.get("start") is not None and _start_time(rec["pid"]) == rec["start"] \
        and not _zombie(rec["pid"])


def _spawn(args: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Start a process in its own process group (session), logging to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return _record(proc.pid)


def load_pids(home: Path = STATE) -> dict[str, Any]:
    path = home / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_pids(pids: dict[str, Any], home: Path = STATE) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "pids.json").write_text(json.dumps(pids, indent=2))


def _signal_tree(rec: dict[str, Any], sig: int) -> list[int]:
    """Signal a recorded process, its process group and every descendant; returns the pids signalled."""
    if not _alive(rec):
        return []
    pid = rec["pid"]
    pids = [pid, *descendants(pid)]
    try:
        os.killpg(pid, sig)  # the group leader's group: the process and the children that stayed in it
    except OSError:
        pass
    for p in pids:
        try:
            os.kill(p, sig)
        except OSError:
            pass
    return pids


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    starts = {p: _start_time(p) for p in pids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p, s in starts.items() if s is not None and _start_time(p) == s and not _zombie(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p, s in starts.items() if s is not None and _start_time(p) == s and not _zombie(p)]


def _zombie(pid: int) -> bool:
    """The process has exited and waits for its parent (or is gone altogether)."""
    import psutil

    proc = _process(pid)
    try:
        return proc is None or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def stop(rec: dict[str, Any] | None, grace: float = 10.0) -> None:
    """SIGTERM a recorded process tree, then SIGKILL what is left after ``grace`` seconds."""
    if not _alive(rec):
        return
    pids = _signal_tree(rec, signal.SIGTERM)
    left = _wait_gone(pids, grace)
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    _wait_gone(left, 5.0)


def kill_worker(home: Path = STATE) -> list[int]:
    """SIGKILL the worker and everything under it (the running flow, its Ray): a crash, for tests and drills."""
    pids = load_pids(home)
    rec = pids.get("worker")
    killed = _signal_tree(rec, signal.SIGKILL) if rec else []
    _wait_gone(killed, 10.0)
    return killed


# --------------------------------------------------------------------------- the stack
def up(port: int, home: Path = STATE, timeout: float = 180.0, env_extra: dict[str, str] | None = None,
       database_url: str | None = None) -> dict[str, str]:
    """Start the server and the worker unless they are already up; returns the stack's environment."""
    env = stack_env(port, home, env_extra, database_url)
    (home / "home").mkdir(parents=True, exist_ok=True)
    pids = load_pids(home)
    if not healthy(port):
        if _alive(pids.get("server")):
            stop(pids["server"])  # ours, but not answering on this port: restart it
        pids["server"] = _spawn([prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env, home / "server.log")
        pids["port"] = port
        save_pids(pids, home)
        deadline = time.monotonic() + timeout
        while not healthy(port):
            if not _alive(pids["server"]):
                raise SystemExit(f"prefect server exited; see {home / 'server.log'}")
            if time.monotonic() > deadline:
                raise SystemExit(f"prefect server did not become healthy on port {port}; see {home / 'server.log'}")
            time.sleep(0.5)
    ensure_pool(env)
    if not _alive(pids.get("worker")):
        crashed = mark_orphans_crashed(env)
        if crashed:
            print(f"marked {len(crashed)} flow run(s) of the dead worker Crashed: {', '.join(crashed)}")
        pids["worker"] = _spawn([prefect_bin(), "worker", "start", "--pool", POOL, "--type", "process",
                                 "--name", f"lift-local-{port}"], env, home / "worker.log")
        save_pids(pids, home)
    return env


def ensure_pool(env: dict[str, str]) -> None:
    try:
        api(env, f"/work_pools/{POOL}")
        return
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise
    proc = subprocess.run([prefect_bin(), "work-pool", "create", POOL, "--type", "process"], env=env, cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0 and "already exists" not in proc.stdout + proc.stderr:
        raise SystemExit(f"could not create work pool {POOL!r}:\n{proc.stdout}{proc.stderr}")


def mark_orphans_crashed(env: dict[str, str]) -> list[str]:
    """Flow runs of this pool still ``Running``/``Pending`` while no worker lives are orphans: mark them Crashed.

    Only the local worker serves the pool, so when it is dead nothing is executing them.
    """
    runs = api(env, "/flow_runs/filter", {
        "flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING", "CANCELLING"]}}},
        "work_pools": {"name": {"any_": [POOL]}},
    })
    ids = []
    for run in runs:
        api(env, f"/flow_runs/{run['id']}/set_state", {
            "state": {"type": "CRASHED", "name": "Crashed",
                      "message": "The local worker that ran this flow run died; trigger the deployment again to resume."},
            "force": True,
        })
        ids.append(run["id"])
    return ids


def deploy(env: dict[str, str], names: list[str] | None = None) -> None:
    """``prefect --no-prompt deploy`` of prefect.yaml (all deployments unless ``names``); then the
    rescoring schedule from its config (``sync_rescore_schedule``)."""
    args = [prefect_bin(), "--no-prompt", "deploy"]
    args += [a for n in names for a in ("--name", n)] if names else ["--all"]
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"prefect deploy failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    if not names or RESCORE_DEPLOYMENT in names:
        sync_rescore_schedule(env)


def sync_rescore_schedule(env: dict[str, str], name: str = RESCORE_DEPLOYMENT) -> dict[str, str] | None:
    """Give the deployed ``name`` the schedule of the config it runs: ``rescore.cron`` in ``rescore.timezone``
    of its ``config`` parameter with its ``overrides``. Returns that schedule, or None when ``name`` is not
    deployed. A schedule that already matches is left alone (its planned runs stay); another one is
    replaced, and the server drops the runs it had planned."""
    try:
        dep = api(env, f"/deployments/name/{name}")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise
    _lift()
    from flows.common import load_flow_config

    params = dep.get("parameters") or {}
    rescore = load_flow_config(params.get("config") or "configs/demo.yaml", params.get("overrides") or [])["rescore"]
    want = {"cron": rescore["cron"], "timezone": rescore["timezone"]}
    schedules = dep.get("schedules") or []
    have = [{k: (s.get("schedule") or {}).get(k) for k in want} for s in schedules]
    if have == [want]:
        return want
    if len(schedules) == 1:
        api(env, f"/deployments/{dep['id']}/schedules/{schedules[0]['id']}", {"schedule": want}, method="PATCH")
    else:
        for s in schedules:
            api(env, f"/deployments/{dep['id']}/schedules/{s['id']}", method="DELETE")
        api(env, f"/deployments/{dep['id']}/schedules", [{"schedule": want, "active": True}])
    print(f"{name}: schedule {want['cron']} ({want['timezone']}) from rescore.cron of {params.get('config')}",
          flush=True)
    return want


def trigger(env: dict[str, str], name: str = DEPLOYMENT, params: dict[str, Any] | None = None) -> str:
    """``prefect deployment run NAME`` through the CLI; returns the new flow run's id."""
    args = [prefect_bin(), "deployment", "run", name]
    if params:
        args += ["--params", json.dumps(params)]
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"prefect deployment run failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", proc.stdout)
    if not match:
        raise SystemExit(f"no flow run id in `prefect deployment run` output:\n{proc.stdout}")
    return match.group(1)


def flow_run(env: dict[str, str], run_id: str) -> dict[str, Any]:
    return api(env, f"/flow_runs/{run_id}")


def task_runs(env: dict[str, str], run_id: str) -> list[dict[str, Any]]:
    return api(env, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [run_id]}}, "sort": "EXPECTED_START_TIME_ASC"})


def _lift() -> None:
    """Make the checkout's packages importable (this script runs from infra/)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


class TaskProgress:
    """The flow run's tasks as they go: state changes as lines, and each task's progress artifact
    (fraction and ``label: message``) through ``lift_core.progress.TerminalProgress``: a bar with count,
    rate and ETA where stderr is a terminal, plain lines where it is not."""

    def __init__(self, env: dict[str, str], run_id: str, stream: Any = None):
        _lift()
        from lift_core.progress import TerminalProgress

        self.env, self.run_id = env, run_id
        self.out = TerminalProgress("lift-full", stream=stream, emit=lambda line: print(line, flush=True))
        self.bars: dict[str, Any] = {}
        self.seen: dict[str, Any] = {}

    def poll(self) -> None:
        for t in task_runs(self.env, self.run_id):
            name = t["state"]["name"] if t.get("state") else "?"
            if self.seen.get(t["id"]) != name:
                self.seen[t["id"]] = name
                self.out.write(f"  task {t['name']:<22} {name}")
        found = api(self.env, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [self.run_id]},
                                                                  "type": {"any_": ["progress"]}}})
        for a in found:
            label, _, message = (a.get("description") or "").partition(": ")
            if not isinstance(a.get("data"), (int, float)) or self.seen.get(a["id"]) == (a["data"], message):
                continue
            self.seen[a["id"]] = (a["data"], message)
            bar = self.bars.setdefault(a["id"], self.out.for_stage(f"  {label}"))
            bar(float(a["data"]) / 100.0, message)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def wait(env: dict[str, str], run_id: str, timeout: float = 3600.0, echo: bool = False) -> str:
    """Poll a flow run until it ends; returns its final state type (``TIMEOUT`` when it did not end).

    ``echo``: show the tasks' states and progress meanwhile (``TaskProgress``)."""
    deadline = time.monotonic() + timeout
    shown = TaskProgress(env, run_id) if echo else None
    try:
        while time.monotonic() < deadline:
            state = flow_run(env, run_id)["state_type"]
            if shown is not None:
                shown.poll()
            if state in TERMINAL:
                return state
            time.sleep(2.0)
        return "TIMEOUT"
    finally:
        if shown is not None:
            shown.close()


def results(env: dict[str, str], run_id: str, ui_link: str | None = None, flow_name: str = "lift-full") -> str:
    """The results summary of a finished run (``lift_core.results``, as the flow's ``<flow>-results``
    artifact), read from the stage folders its ``<flow>-run`` table lists."""
    _lift()
    from lift_core.results import run_summary, summary_text

    found = api(env, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]},
                                                         "key": {"any_": [f"{flow_name}-run"]}}})
    data = found[0]["data"] if found else []
    rows = json.loads(data) if isinstance(data, str) else data
    return summary_text(run_summary([r["folder"] for r in rows if r.get("folder")], ui_url=ui_link))


def run_deployment(env: dict[str, str], name: str = DEPLOYMENT, params: dict[str, Any] | None = None,
                   timeout: float = 3600.0, echo: bool = False) -> tuple[str, str]:
    """Trigger a deployment through the CLI and wait for it: (flow_run_id, final state type)."""
    run_id = trigger(env, name, params)
    return run_id, wait(env, run_id, timeout, echo)


def down(home: Path = STATE) -> None:
    pids = load_pids(home)
    for name in ("worker", "server"):
        stop(pids.get(name))
    (home / "pids.json").unlink(missing_ok=True)
    print("local stack stopped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["demo", "up", "down", "schedule"])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--port", type=int, default=int(os.environ.get("PREFECT_PORT", 4200)))
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the demo run")
    ap.add_argument("overrides", nargs="*", help="config overrides (dotted.key=value) for the demo run")
    args = ap.parse_args()
    if args.command == "down":
        down()
        return
    if args.command == "schedule":
        if not os.environ.get("PREFECT_API_URL"):
            raise SystemExit("schedule: set PREFECT_API_URL (and PREFECT_API_AUTH_STRING for the compose stack)")
        if sync_rescore_schedule(dict(os.environ)) is None:
            raise SystemExit(f"schedule: {RESCORE_DEPLOYMENT} is not deployed (run `prefect --no-prompt deploy --all`)")
        return
    env = up(args.port)
    ui = f"http://127.0.0.1:{args.port}"
    print(f"Prefect server and worker up: {ui}", flush=True)
    if args.command == "up":
        return
    deploy(env)
    run_id = trigger(env, params={"config": args.config, "overrides": args.overrides})
    print(f"lift-full flow run {run_id}: {ui}/runs/flow-run/{run_id}", flush=True)
    state = wait(env, run_id, args.timeout, echo=True)
    print(f"lift-full flow run {run_id} finished in state {state}")
    if state == "COMPLETED":
        print("\n" + results(env, run_id, f"{ui}/runs/flow-run/{run_id}"), flush=True)
    print(f"Prefect UI: {ui}/runs/flow-run/{run_id}   (the stack keeps running; stop it with `make down`)")
    if state != "COMPLETED":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
