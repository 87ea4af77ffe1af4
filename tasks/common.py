"""What every stage task shares: config rehydration, the cache policy, retries, GPU slots and progress artifacts.

A task passes URIs and small dicts (``StageResult.to_dict()``), never models or tensors.

Caching: ``INPUTS + TASK_SOURCE``, where the inputs that count are the stage's name, its key and its
output folder (``lift_core.stages``: ``stage_out``). The key hashes the stage's config (its fields that
change the output, not where or how fast it runs), the content of its inputs and the code version, so
Prefect's cache and the stage folder ``<run_root>/<stage>/<key>/`` hit and miss together. The whole
config and the input URIs are passed too, but left out of the cache key: the stage key stands for them.
Results persist (JSON) under ``<run_root>/_prefect/results``, so a second flow run with the same
inputs, in any process and against any Prefect server, is all cache hits; deleting the run root
forgets them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

from prefect import Task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.tasks import exponential_backoff

from lift_core import storage
from lift_core.config import ConfigError, PipelineConfig
from lift_core.progress import ProgressFn
from lift_core.stages import get_stage

log = logging.getLogger("lift.tasks")

# The stage key (with the stage name and its output folder) is what the cache sees of the inputs.
STAGE_CACHE = INPUTS - "cfg" - "inputs" - "label" + TASK_SOURCE

# Errors worth a retry: storage and network hiccups. Anything else (bad config, bad data) fails now.
# This is the one definition of "transient": every task's retry condition goes through ``is_transient``.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError)
# OSErrors that a retry cannot fix: a missing input stays missing, a denied permission stays denied.
# A ConfigError is a ValueError (never retried); it is named so that the rule reads whole here.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ConfigError)


def is_transient(err: BaseException) -> bool:
    """Whether a retry may help: a storage or network hiccup, not a missing path, a denied access or bad config."""
    return isinstance(err, TRANSIENT_ERRORS) and not isinstance(err, PERMANENT_ERRORS)


def retry_on_transient_errors(task, task_run, state) -> bool:  # noqa: ARG001 - Prefect's signature
    """Prefect's ``retry_condition_fn``: retry a failed attempt only when its error ``is_transient``."""
    try:
        state.result()
    except Exception as err:
        return is_transient(err)
    return False


def task_options(name: str) -> dict[str, Any]:
    """Decorator options of every stage task (retries and storage are refined per run by ``for_run``)."""
    return {
        "name": name,
        "task_run_name": "{label}",
        "cache_policy": STAGE_CACHE,
        "persist_result": True,
        "result_serializer": "json",
        "cache_expiration": timedelta(days=90),
        "retries": 3,
        "retry_delay_seconds": exponential_backoff(backoff_factor=2),
        "retry_jitter_factor": 0.2,
        "retry_condition_fn": retry_on_transient_errors,
    }


def result_storage_uri(cfg: PipelineConfig) -> str:
    return cfg.prefect.result_storage or storage.join(cfg.run_root, "_prefect", "results")


_SAVED_STORAGE: dict[str, Any] = {}


def result_storage(cfg: PipelineConfig):
    """Where this run's task results persist: a local ``Path``, or a saved fsspec block for remote roots.

    Prefect only accepts saved blocks (or paths): a remote root gets a ``RemoteFileSystem`` block
    named after the URI, saved once per process.
    """
    uri = result_storage_uri(cfg)
    if "://" not in uri or uri.startswith("file://"):
        return Path(storage.abspath_if_local(uri.removeprefix("file://")))
    if uri not in _SAVED_STORAGE:
        from prefect.filesystems import RemoteFileSystem

        block = RemoteFileSystem(basepath=uri)
        block.save(f"lift-results-{storage.hash_parts(uri)}", overwrite=True)
        _SAVED_STORAGE[uri] = block
    return _SAVED_STORAGE[uri]


def for_run(task: Task, cfg: PipelineConfig) -> Task:
    """The task with this run's retry policy and result storage."""
    p = cfg.prefect
    return task.with_options(
        retries=p.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=p.retry_backoff_s) if p.retry_backoff_s else 0,
        retry_jitter_factor=p.retry_jitter,
        result_storage=result_storage(cfg),
    )


def config_of(cfg: dict[str, Any] | PipelineConfig) -> PipelineConfig:
    return cfg if isinstance(cfg, PipelineConfig) else PipelineConfig.model_validate(cfg)


# --------------------------------------------------------------------------- artifacts
TABLE_DIGITS = 4  # significant digits of the floats in table artifacts: 0.6105, not 0.6105263157894737


def rounded(value: Any, digits: int = TABLE_DIGITS) -> Any:
    """``value`` with every float (also in nested lists and dicts) rounded to ``digits`` significant digits."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def publish_table(table: Any, key: str, description: str) -> Any:
    """A Prefect table artifact with its floats rounded for reading (the stage outputs keep full precision)."""
    from prefect.artifacts import create_table_artifact

    return create_table_artifact(table=rounded(table), key=key, description=description)


def artifact_key(stage: str, kind: str) -> str:
    """Artifact keys may hold lowercase letters, digits and dashes only."""
    raw = f"{stage}-{kind}".lower()
    return "".join(c if c.isalnum() else "-" for c in raw)


# --------------------------------------------------------------------------- GPUs
def gpu_limit_size(cfg: PipelineConfig) -> int | None:
    """The size of the GPU concurrency limit: ``prefect.gpu_slots``, else ``ray.num_gpus`` (None: unknown)."""
    return cfg.prefect.gpu_slots or cfg.ray.num_gpus or None


def ensure_gpu_limit(cfg: PipelineConfig, need: int) -> int:
    """Create the global concurrency limit when it is missing; returns its size.

    An explicit ``prefect.gpu_slots`` is enforced (the limit is updated to it); otherwise an existing
    limit (an operator may have sized it for the cluster) is left as it is. GPU stages running side by
    side (or another run) may create it at the same moment: whoever loses that race finds it made.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = cfg.prefect.gpu_concurrency_limit
    with get_client(sync_client=True) as client:
        for attempt in range(3):
            try:
                if cfg.prefect.gpu_slots:
                    client.upsert_global_concurrency_limit_by_name(name, cfg.prefect.gpu_slots)
                    return cfg.prefect.gpu_slots
                try:
                    return client.read_global_concurrency_limit_by_name(name).limit
                except ObjectNotFound:
                    size = gpu_limit_size(cfg) or need
                    client.upsert_global_concurrency_limit_by_name(name, size)
                    return size
            except ObjectAlreadyExists:  # created between our read and our create: read (or update) it now
                if attempt == 2:
                    raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def gpu_slots(cfg: PipelineConfig, stage: str) -> Iterator[int]:
    """Hold the stage's GPUs in the global concurrency limit while it runs (nothing on CPU).

    Two flow runs on one cluster then queue for GPUs instead of oversubscribing them. A stage that
    needs more GPUs than the limit holds takes the whole limit.
    """
    need = get_stage(stage).gpus(cfg)
    if need == 0:
        yield 0
        return
    from prefect.concurrency.sync import concurrency

    size = ensure_gpu_limit(cfg, need)
    occupy = min(need, size)
    log.info("%s: waiting for %d of %d slots of GPU limit %r", stage, occupy, size, cfg.prefect.gpu_concurrency_limit)
    with concurrency(cfg.prefect.gpu_concurrency_limit, occupy=occupy, timeout_seconds=cfg.prefect.gpu_wait_s,
                     strict=True):
        yield occupy


# --------------------------------------------------------------------------- progress
def progress_artifact(stage: str, min_interval_s: float = 0.5) -> ProgressFn:
    """A ProgressFn that keeps one Prefect progress artifact up to date (at most ~2 updates/s).

    Reporting never fails a stage: an API error is logged once and later updates are dropped.
    """
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    artifact_id = create_progress_artifact(progress=0.0, key=artifact_key(stage, "progress"),
                                           description=f"{stage}: starting")
    state = {"last": 0.0, "broken": False}

    def report(fraction: float, message: str) -> None:
        now = time.monotonic()
        if state["broken"] or (fraction < 1.0 and now - state["last"] < min_interval_s):
            return
        state["last"] = now
        try:
            update_progress_artifact(artifact_id=artifact_id, progress=round(100.0 * min(max(fraction, 0.0), 1.0), 1),
                                     description=f"{stage}: {message}")
        except Exception as err:  # the API being briefly away must not stop the work
            state["broken"] = True
            log.warning("progress artifact of %s not updated: %s", stage, err)

    return report
