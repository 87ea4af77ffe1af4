"""The body every stage task shares: progress artifact, GPU slots, the stage call, its summary."""

from __future__ import annotations

from typing import Any, Callable

from lift_core.config import PipelineConfig
from lift_core.progress import ProgressFn
from lift_core.storage import StageResult
from tasks.common import config_of, gpu_slots, progress_artifact

StageCall = Callable[[PipelineConfig, ProgressFn], StageResult]


def execute(cfg: dict[str, Any] | PipelineConfig, stage: str, label: str, call: StageCall) -> dict[str, Any]:
    """Run one stage function inside a task run and return its ``StageResult`` as a dict.

    ``stage`` names the stage (its GPU needs and summary); ``label`` names this use of it in the UI
    (``decode`` and ``decode-generated`` are both the decode stage).
    """
    from tasks.summaries import publish

    c = config_of(cfg)
    progress = progress_artifact(label)
    with gpu_slots(c, stage):
        result = call(c, progress).to_dict()
    progress(1.0, "done: " + ", ".join(f"{k}={v}" for k, v in sorted(result["counts"].items())[:6]))
    publish(result, label)
    return result
