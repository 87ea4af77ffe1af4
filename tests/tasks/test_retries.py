"""Transient storage errors are retried with backoff; real errors fail at once.

``flaky://`` is an in-memory fsspec filesystem whose first N opens raise ``ConnectionResetError``,
as an object store does when a connection drops. The synth stage writes its videos through it.
"""

from __future__ import annotations

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from prefect import flow

from lift_core import storage
from lift_core.config import load_config
from tasks.stages import Stages

pytestmark = pytest.mark.integration


class FlakyFileSystem(MemoryFileSystem):
    protocol = "flaky"
    store: dict = {}  # its own store, apart from memory://
    pseudo_dirs = [""]
    failures_left = 0
    failures_raised = 0

    def _open(self, path, mode="rb", **kwargs):
        if FlakyFileSystem.failures_left > 0:
            FlakyFileSystem.failures_left -= 1
            FlakyFileSystem.failures_raised += 1
            raise ConnectionResetError(f"flaky storage: connection reset while opening {path}")
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


def _cfg(tmp_path, run_root: str, *extra: str):
    return load_config("configs/demo.yaml", [
        f"run_root={run_root}", "data.synthetic.n=3", "data.synthetic.n_real=1", "data.synthetic.n_prompts=2",
        f"prefect.result_storage={tmp_path / 'results'}", "prefect.retries=3", "prefect.retry_backoff_s=0.2",
        "prefect.retry_jitter=0", *extra,
    ])


@flow(name="retry-probe")
def synth_once(cfg_dict: dict) -> tuple[dict, str]:
    run = Stages(cfg_dict)
    return run.synth().result(), run.states["synth"]


def _task_run_count(flow_state) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        (tr,) = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id])))
    return tr.run_count


def test_transient_io_errors_are_retried_until_the_stage_succeeds(prefect_api, tmp_path):
    FlakyFileSystem.store.clear()
    FlakyFileSystem.failures_left, FlakyFileSystem.failures_raised = 2, 0
    cfg = _cfg(tmp_path, "flaky://lift-retry/run")

    state = synth_once(cfg.model_dump(mode="json"), return_state=True)

    assert state.is_completed(), state.message
    result, task_state = state.result()
    assert task_state == "Completed"
    assert FlakyFileSystem.failures_raised == 2 and FlakyFileSystem.failures_left == 0
    assert _task_run_count(state) == 3  # two failed attempts, then the one that worked
    fs = fsspec.filesystem("flaky")
    assert result["out_uri"].startswith("flaky://lift-retry/run/synth/")
    assert fs.exists(result["out_uri"] + "/_SUCCESS.json")
    assert len(storage.read_json(result["outputs"]["hra_json"])) == 3 * 3  # 3 videos x 3 questions
    assert storage.load_success(result["out_uri"]).to_dict() == result


def test_retries_give_up_after_the_configured_attempts(prefect_api, tmp_path):
    FlakyFileSystem.store.clear()
    FlakyFileSystem.failures_left, FlakyFileSystem.failures_raised = 100, 0
    cfg = _cfg(tmp_path, "flaky://lift-retry/down", "prefect.retries=1")

    state = synth_once(cfg.model_dump(mode="json"), return_state=True)

    assert state.is_failed()
    assert FlakyFileSystem.failures_raised == 2  # the first attempt and one retry, no more
    with pytest.raises(ConnectionResetError, match="flaky storage"):
        state.result()
    FlakyFileSystem.failures_left = 0


def test_errors_that_are_not_transient_are_not_retried(prefect_api, tmp_path):
    # A config the stage rejects (ValueError) fails on the first attempt: retrying cannot help.
    # (The flow would refuse it before the task: synth's key needs data.synthetic. Called directly here.)
    c = _cfg(tmp_path, str(tmp_path / "run"), "data.synthetic=null")
    from tasks.common import for_run
    from tasks.stage_task import stage_task

    @flow(name="retry-probe-valueerror")
    def probe():
        return for_run(stage_task("synth"), c)(c.model_dump(mode="json"), stage="synth", label="synth", inputs={},
                                               key="no-key", out_dir=str(tmp_path / "run/synth/no-key"),
                                               return_state=True)

    state = probe(return_state=True)
    task_state = state.result(raise_on_failure=False)
    assert task_state.is_failed()
    assert _task_run_count(state) == 1
    with pytest.raises(ValueError, match="data.synthetic is not set"):
        task_state.result()
