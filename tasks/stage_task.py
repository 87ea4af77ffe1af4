"""The Prefect task of any declared stage (``lift_core.stages``), built the same way for all.

The body holds the stage's GPU slots, runs it with a progress artifact, checks that it wrote under
the key the cache was given and publishes the summary its declaration builds.
"""

from __future__ import annotations

import functools
from typing import Any

from prefect import Task
from prefect.logging import get_run_logger

from lift_core import storage
from lift_core.progress import TerminalProgress, tee
from lift_core.stages import Artifact, get_stage
from tasks.common import artifact_key, config_of, gpu_slots, progress_artifact, publish_table, task_options


def run_stage(cfg: dict[str, Any], stage: str, label: str, inputs: dict[str, Any], key: str,
              out_dir: str) -> dict[str, Any]:
    """Run ``stage`` on ``inputs``; ``key`` and ``out_dir`` (from its ``stage_out``) are the cache key.

    ``label`` names this use of the stage in the UI (``decode`` and ``decode-generated`` are both the
    decode stage); its task run and artifacts carry it.
    """
    declared = get_stage(stage)
    c = config_of(cfg)
    # The UI's progress artifact, and a bar where this process has a terminal (``lift run``) or throttled
    # lines in the task's log where it has none (a worker's flow run).
    progress = tee(progress_artifact(label), TerminalProgress(label, emit=get_run_logger().info))
    with gpu_slots(c, stage):
        try:
            result = declared(c, progress=progress, **inputs)
        except Exception as err:
            # Disk full, permission denied, missing credentials: the UI shows the path and the cause,
            # not the Ray wrapper around them.
            resource = storage.resource_error_in(err)
            if resource is not None:
                raise resource from err
            raise
    if result.key != key:
        # Prefect would file this result under the other key: an input changed while the stage ran,
        # or the stage's run and stage_out functions disagree.
        raise RuntimeError(f"{label}: the stage wrote under key {result.key} ({result.out_uri}), "
                           f"but was cached as {key} ({out_dir})")
    out = result.to_dict()
    progress(1.0, "done: " + ", ".join(f"{k}={v}" for k, v in sorted(out["counts"].items())[:6]))
    publish(declared.summary(out), label)
    return out


def publish(artifacts: list[Artifact], label: str) -> None:
    """Create a stage's summary artifacts in the current task run, keyed ``<label>-<name>``."""
    from prefect.artifacts import create_markdown_artifact

    for a in artifacts:
        key, description = artifact_key(label, a.name), f"{label}: {a.description}"
        if a.table is not None:
            publish_table(a.table, key, description)
        else:
            create_markdown_artifact(markdown=a.markdown or "", key=key, description=description)


@functools.cache
def stage_task(stage: str) -> Task:
    """The Prefect task named after the declared stage ``stage``."""
    get_stage(stage)
    return Task(run_stage, **task_options(stage))
