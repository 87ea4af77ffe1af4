"""``Stages``: the declared stages bound to one run's config, so flows read as recipes.

Each method runs one stage and returns its ``StageResult`` dict. ``Stages`` runs it as the stage's
Prefect task (cached on the stage key, retried, with the run's result storage) and keeps each task's
final state (``Cached`` or ``Completed``) for the run summary. ``InlineStages`` runs the same stage
functions in this process without Prefect (the ``lift`` CLI): a finished stage is found by its
``_SUCCESS.json``.
"""

from __future__ import annotations

from typing import Any

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.progress import ProgressFn
from lift_core.stages import get_stage


class Stages:
    def __init__(self, cfg: dict[str, Any] | PipelineConfig):
        self.cfg = cfg if isinstance(cfg, PipelineConfig) else PipelineConfig.model_validate(cfg)
        self.states: dict[str, str] = {}  # label -> final state of this run's task run
        self.results: dict[str, dict[str, Any]] = {}  # label -> StageResult dict
        self.stage_of: dict[str, str] = {}  # label -> stage name

    def _run(self, stage: str, label: str, **inputs: Any) -> dict[str, Any]:
        """Run ``stage`` as its Prefect task; the task's cache key is the stage key."""
        from tasks.common import for_run
        from tasks.stage_task import stage_task

        key, out_dir = get_stage(stage).stage_out(self.cfg, **inputs)
        task = stage_task(stage)
        if storage.check_success(out_dir)[0] is None:
            # The folder is the truth: a stage whose outputs are gone or no longer match its
            # _SUCCESS.json runs again (and repairs them), even when Prefect's cache holds its result.
            task = task.with_options(refresh_cache=True)
        task = for_run(task, self.cfg)
        state = task(self.cfg.model_dump(mode="json"), stage=stage, label=label, inputs=inputs, key=key,
                     out_dir=out_dir, return_state=True)
        self.states[label] = state.name
        return self._record(stage, label, state.result())  # raises the stage's error when the task failed

    def _record(self, stage: str, label: str, result: dict[str, Any]) -> dict[str, Any]:
        self.stage_of[label] = stage
        self.results[label] = result
        return result

    # ----------------------------------------------------------------------- the stages
    def synth(self) -> dict[str, Any]:
        return self._run("synth", "synth")

    def ingest(self, synth: dict[str, Any] | None) -> dict[str, Any]:
        return self._run("ingest", "ingest", synth_outputs=synth["outputs"] if synth else None)

    def decode(self, manifest_uri: str, label: str = "decode") -> dict[str, Any]:
        return self._run("decode", label, manifest_uri=manifest_uri)

    def train_critic(self, manifest_uri: str, frames_uri: str) -> dict[str, Any]:
        return self._run("train_critic", "train-critic", manifest_uri=manifest_uri, frames_uri=frames_uri)

    def generate(self, prompts_uri: str, split: str = "train", lora_uri: str | None = None,
                 tag: str = "base") -> dict[str, Any]:
        return self._run("generate", f"generate-{tag}-{split}", prompts_uri=prompts_uri, split=split,
                         lora_uri=lora_uri, tag=tag)

    def score(self, manifest_uris: list[str], frames_uris: list[str], adapter_uri: str) -> dict[str, Any]:
        return self._run("score", "score", manifest_uris=manifest_uris, frames_uris=frames_uris,
                         adapter_uri=adapter_uri)

    def align(self, scores_uri: str, manifest_uris: list[str]) -> dict[str, Any]:
        return self._run("align", "align", scores_uri=scores_uri, manifest_uris=manifest_uris)

    def evaluate(self, prompts_uri: str, adapter_uri: str, align_outputs: dict[str, str]) -> dict[str, Any]:
        return self._run("evaluate", "evaluate", prompts_uri=prompts_uri, adapter_uri=adapter_uri,
                         align_outputs=align_outputs)

    # ----------------------------------------------------------------------- shared chains
    def prepare_data(self) -> dict[str, str]:
        """synth (when the config renders demo data) -> ingest -> decode: ``manifest``, ``prompts``, ``frames``."""
        synth = self.synth() if self.cfg.data.synthetic is not None else None
        ingested = self.ingest(synth)
        frames = self.decode(ingested["outputs"]["manifest"])
        return {"manifest": ingested["outputs"]["manifest"], "prompts": ingested["outputs"]["prompts"],
                "frames": frames["outputs"]["frames"]}

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per task of this run: its stage, state, stage key, main counts, primary output and folder."""
        rows = []
        for label, result in self.results.items():
            counts = ", ".join(f"{k}={v}" for k, v in sorted(result["counts"].items())[:5])
            primary = next(iter(result["outputs"].values()), "")
            rows.append({"task": label, "stage": self.stage_of[label], "state": self.states.get(label, ""),
                         "key": result["key"], "counts": counts, "output": primary, "folder": result["out_uri"]})
        return rows


class InlineStages(Stages):
    """The same stages called in this process, without Prefect: no task cache, no artifacts, no GPU slots."""

    def __init__(self, cfg: dict[str, Any] | PipelineConfig, progress: ProgressFn | None = None):
        super().__init__(cfg)
        self.progress = progress

    def _run(self, stage: str, label: str, **inputs: Any) -> dict[str, Any]:
        # A renderer per stage (lift_core.progress.TerminalProgress): its own bar and label.
        progress = self.progress.for_stage(label) if hasattr(self.progress, "for_stage") else self.progress
        result = get_stage(stage)(self.cfg, progress=progress, **inputs)
        return self._record(stage, label, result.to_dict())
