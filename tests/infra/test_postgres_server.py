"""Prefect on PostgreSQL 15: a local cluster (initdb + pg_ctl in a temporary folder), `prefect server`
against it, a worker, `prefect deploy`, `prefect deployment run lift-full/lift-full` through the CLI,
and the state and artifacts read back through the Prefect API (and in the database itself).

The run reuses the stage outputs of the session's first run (same run root) with its own Prefect
result storage: every task runs, finds its stage's ``_SUCCESS.json`` and publishes its artifacts.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/15/bin/initdb"))
    return Path(found[0]).parent if found else None


@pytest.fixture(scope="module")
def postgres(stack_tools):
    """A throwaway PostgreSQL 15 on 127.0.0.1 (run as the `postgres` user when the tests run as root)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL 15 is not installed and make test could not install it (infra/install_system_deps.sh needs root and apt-get)")
    root = Path(tempfile.mkdtemp(prefix="lift-pg-"))  # not under pytest's 0700 folder: the server user reads it
    data, sock, port = root / "data", root / "sock", stack_tools.free_port()
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(sock, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "prefect", "--auth=trust", "-E", "UTF8")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-w", "-t", "60",
       "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1", "start")
    try:
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "prefect")
        yield {"port": port, "url": f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect",
               "dsn": f"host=127.0.0.1 port={port} user=prefect dbname=prefect"}
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_deployment_on_a_postgres_backed_server(postgres, demo_run, local_stack, stack_tools, tmp_path_factory):
    assert demo_run.state == "COMPLETED"
    home = tmp_path_factory.mktemp("prefect-pg-stack")
    env = local_stack.up(stack_tools.free_port(), home, database_url=postgres["url"])
    try:
        local_stack.deploy(env, names=["lift-full/lift-full"])
        overrides = [*demo_run.params["overrides"], f"prefect.result_storage={home / 'results'}"]
        run_id, state = local_stack.run_deployment(env, params={"config": "configs/demo.yaml", "overrides": overrides},
                                                   timeout=600)
        assert state == "COMPLETED", local_stack.flow_run(env, run_id)["state"]

        run = local_stack.flow_run(env, run_id)
        assert run["parameters"]["overrides"] == overrides
        deployment = local_stack.api(env, f"/deployments/{run['deployment_id']}")
        assert deployment["name"] == "lift-full" and deployment["work_pool_name"] == "local"
        assert stack_tools.task_states(env, run_id) == dict.fromkeys(stack_tools.TASKS, "Completed")
        found = stack_tools.artifacts(env, run_id)
        report = found["evaluate-report"]["data"]
        assert report.startswith("# LiFT evaluation") and report.count("](data:image/png;base64,") == 4
        assert {"train-critic-metrics", "score-rewards", "evaluate-summary", "lift-full-run"} <= set(found)
    finally:
        local_stack.down(home)

    # The records are in PostgreSQL, not in a SQLite file.
    import psycopg2

    with psycopg2.connect(postgres["dsn"]) as conn, conn.cursor() as cur:
        cur.execute("select state_type from flow_run where id = %s", (run_id,))
        assert cur.fetchone() == ("COMPLETED",)
        cur.execute("select count(*) from artifact where flow_run_id = %s and key = 'evaluate-report'", (run_id,))
        assert cur.fetchone() == (1,)
    assert not list(home.rglob("prefect.db"))
