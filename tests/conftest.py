"""Shared test fixtures: the real LiFT fixtures, one Ray instance per session, offline hubs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Nothing is downloaded in tests: every model is built locally and loaded from disk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray instance for the whole session (as CI's 2-core machine allows)."""
    import ray

    from lift_core.distributed.ray_runtime import loopback_node

    if not ray.is_initialized():
        with loopback_node():  # as the pipeline's own local instance: servers on 127.0.0.1 only
            ray.init(num_cpus=2, object_store_memory=int(5e8), include_dashboard=False, log_to_driver=False)
    yield ray


@pytest.fixture(scope="session")
def ray_address(ray_session) -> str:
    """The session's Ray as a child driver reaches it (``ray.address`` / ``LIFT_RAY_ADDRESS``): its GCS
    port on loopback, where the local instance listens."""
    port = ray_session.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def lift_cli(monkeypatch, capsys):
    """Run ``flows.cli.main`` in this process, as the ``lift`` console script does: ``(exit code, stdout, stderr)``."""
    from flows import cli

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["lift", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def moto_endpoint():
    """A real S3-protocol server (moto's server mode) on 127.0.0.1 for one module: its URL.

    Its state is process-global; a test that needs an empty server POSTs ``/moto-api/reset``."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kill_worker_at_step(tmp_path_factory):
    """``kill_worker_at_step(n)``: a training-loop callback whose rank-0 worker process dies (``os._exit``)
    right before step ``n``, once: the marker file it leaves lets the rerun (or restarted group) go on."""
    from lift_core.train import Callback

    class KillWorkerAtStep(Callback):  # defined here, so Ray pickles it by value into its workers
        def __init__(self, step: int, marker: str):
            self.step, self.marker = step, marker

        def on_step_start(self, ctx, step: int) -> None:
            if step == self.step and ctx.rank == 0 and not os.path.exists(self.marker):
                Path(self.marker).touch()
                os._exit(1)

    def make(step: int) -> KillWorkerAtStep:
        return KillWorkerAtStep(step, str(tmp_path_factory.mktemp("kill") / f"killed-at-step-{step}"))

    return make
