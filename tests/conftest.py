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


@pytest.fixture(autouse=True)
def _verify_switch_restored():
    """``lift --verify`` turns full hash checks on process-wide (``LIFT_VERIFY_OUTPUTS``, for Ray workers
    to inherit). Tests run the CLI in this process (``lift_cli``, typer's ``CliRunner``), so the switch is
    put back after each test: a later test's fingerprints would otherwise reread every byte."""
    from lift_core.storage import VERIFY_ENV as name

    before = os.environ.get(name)
    yield
    if before is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = before


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
    """Run ``flows.cli.main`` in this process, as the ``lift`` console script does: ``(exit code, stdout, stderr)``.

    The command sets process environment (``--verify`` sets ``LIFT_VERIFY_OUTPUTS``, for Ray workers to
    inherit); the environment is restored afterwards, so no later test runs with full hash checks on."""
    from flows import cli

    environ = dict(os.environ)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["lift", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    os.environ.clear()
    os.environ.update(environ)


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


@pytest.fixture(scope="session")
def finished_stages():
    """``finished_stages(run_root, critic=True, oracle=True)``: a finished ``train_critic`` and ``evaluate``
    folder under ``run_root`` (``{"train-critic": dir, "evaluate": dir}``), their outputs written by the
    real producers: metrics.json by ``agreement_from_predictions`` (3 of 4 held-out labels right per
    dimension, the majority baseline 2 of 4), eval.json by the evaluation's ``summarize`` over 4 paired
    prompts (aligned +0.1 on the critic and the pixel oracle), report.md by ``report_markdown``, two plots."""
    import numpy as np

    from lift_core import storage
    from lift_core.domain import DIMENSIONS
    from lift_core.metrics.agreement import agreement_from_predictions
    from lift_core.metrics.oracle import ATTRIBUTES
    from lift_core.t2v.evaluate import report_markdown, summarize

    probs = {"Good": (0.8, 0.1, 0.1), "Normal": (0.1, 0.8, 0.1), "Bad": (0.1, 0.1, 0.8)}

    def critic_stage(root: str) -> str:
        out = storage.stage_dir(root, "train_critic", "ck")
        truth, guesses = ["Good", "Good", "Bad", "Normal"], ["Good", "Bad", "Bad", "Normal"]
        preds = [{"video_id": f"v{i}", "split": "test", "dimension": d, "label": t,
                  **dict(zip(("p_good", "p_normal", "p_bad"), probs[g]))}
                 for d in DIMENSIONS for i, (t, g) in enumerate(zip(truth, guesses))]
        train_labels = {d: ["Good", "Good", "Bad"] for d in DIMENSIONS}
        metrics = {**agreement_from_predictions(preds, "test", train_labels, {"Good": 1.0, "Normal": 0.5, "Bad": 0.0}),
                   "steps": 2}
        outputs = {"metrics": storage.join(out, "metrics.json"), "adapter": storage.join(out, "adapter")}
        storage.write_json(outputs["metrics"], metrics)
        storage.write_json(storage.join(outputs["adapter"], "adapter_config.json"), {"r": 8})
        storage.mark_success(storage.StageResult("train_critic", "ck", out, outputs, {"steps": 2}, metrics))
        return out

    def eval_rows(oracle: bool) -> list[dict]:
        rng = np.random.default_rng(0)
        rows = []
        for p in range(4):
            for side, lift in (("base", 0.0), ("aligned", 0.1)):
                r = float(np.clip(0.4 + lift + 0.05 * rng.standard_normal(), 0, 1))
                rows.append({"tag": side, "prompt_id": f"p{p}", "caption": f"a red circle {p}", "index": 0, "seed": p,
                             "reward": r, **{f"reward_{d}": r for d in DIMENSIONS}, "flicker": 0.9 + lift / 10,
                             "oracle": (0.5 + lift) if oracle else None,
                             **{f"oracle_{a}": (0.5 + lift) if oracle else None for a in ATTRIBUTES}})
        return rows

    def evaluate_stage(root: str, oracle: bool) -> str:
        out = storage.stage_dir(root, "evaluate", "ek")
        summary = summarize(eval_rows(oracle), seed=0)
        outputs = {name: storage.join(out, f) for name, f in (("eval_json", "eval.json"), ("report_md", "report.md"),
                                                               ("plots", "plots"))}
        storage.write_json(outputs["eval_json"], summary)
        plots = {n: storage.join(outputs["plots"], n) for n in ("reward_hist.png", "dimensions.png")}
        for uri in plots.values():
            storage.write_bytes_atomic(uri, b"\x89PNG\r\n\x1a\n")
        storage.write_bytes_atomic(outputs["report_md"], report_markdown(summary, plots, None).encode())
        storage.mark_success(storage.StageResult("evaluate", "ek", out, outputs, {"pairs": 4}, summary))
        return out

    def make(run_root: str, critic: bool = True, oracle: bool = True) -> dict[str, str]:
        return {**({"train-critic": critic_stage(str(run_root))} if critic else {}),
                "evaluate": evaluate_stage(str(run_root), oracle)}

    return make
