"""What every stage task shares: config rehydration, caching, retries, progress and summary artifacts."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.tasks import exponential_backoff

from lift_core.config import PipelineConfig
from lift_core.progress import ProgressFn

# INPUTS covers the config dict (its hash) and upstream results; each task also takes
# `code_version` so an edit to lift_core invalidates the cache even when the task source did not change.
STAGE_CACHE = INPUTS + TASK_SOURCE



def task_options(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "cache_policy": STAGE_CACHE,
        "persist_result": True,
        "cache_expiration": timedelta(days=30),
        "retries": 2,
        "retry_delay_seconds": exponential_backoff(backoff_factor=2),
        "retry_jitter_factor": 0.2,
        "retry_condition_fn": _retry_on_io_errors,
    }


def _retry_on_io_errors(task, task_run, state) -> bool:  # noqa: ARG001 - Prefect's signature
    try:
        state.result()
    except (OSError, TimeoutError, ConnectionError):
        return True
    except Exception:
        return False
    return False


def config_of(cfg: dict[str, Any]) -> PipelineConfig:
    return PipelineConfig.model_validate(cfg)


def artifact_key(stage: str, kind: str) -> str:
    return f"{stage.replace('_', '-')}-{kind}".lower()


def progress_artifact(stage: str) -> ProgressFn:
    """A ProgressFn that keeps one Prefect progress artifact up to date (at most ~2 updates/s)."""
    artifact_id = create_progress_artifact(progress=0.0, key=artifact_key(stage, "progress"),
                                           description=f"{stage}: starting")
    last = [0.0]

    def report(fraction: float, message: str) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - last[0] < 0.5:
            return
        last[0] = now
        update_progress_artifact(artifact_id=artifact_id, progress=round(100.0 * min(max(fraction, 0.0), 1.0), 1),
                                 description=f"{stage}: {message}")

    return report


def publish_summary(result: dict[str, Any], description: str = "") -> None:
    """A table artifact with the stage's counts and its output URIs."""
    rows = [{"item": k, "value": v} for k, v in sorted(result["counts"].items())]
    rows += [{"item": f"output:{k}", "value": v} for k, v in sorted(result["outputs"].items())]
    rows.append({"item": "key", "value": result["key"]})
    create_table_artifact(table=rows, key=artifact_key(result["stage"], "summary"),
                          description=description or f"{result['stage']} summary")
