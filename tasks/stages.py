"""``Stages``: the stage tasks bound to one run's config, so flows read as recipes.

Each method computes the task's fingerprint (code version, config sections, input content), applies
the run's retry policy and result storage, runs the task and returns its ``StageResult`` dict. The
final Prefect state of every call is kept (``Cached`` or ``Completed``) for the run summary.
"""

from __future__ import annotations

from typing import Any

from lift_core.config import PipelineConfig
from tasks.common import config_of, for_run, stage_fingerprint
from tasks.critic import score_task, train_critic_task
from tasks.data import decode_task, ingest_task, synth_task
from tasks.t2v import align_task, evaluate_task, generate_task


class Stages:
    def __init__(self, cfg: dict[str, Any] | PipelineConfig):
        self.cfg = config_of(cfg)
        self.cfg_dict = self.cfg.model_dump(mode="json")
        self.states: dict[str, str] = {}  # label -> final state name of this run's task run
        self.results: dict[str, dict[str, Any]] = {}

    def _run(self, label: str, task, stage: str, inputs: list[str], /, **kwargs: Any) -> dict[str, Any]:
        fp = stage_fingerprint(self.cfg, stage, inputs)
        state = for_run(task, self.cfg)(self.cfg_dict, fingerprint=fp, return_state=True, **kwargs)
        self.states[label] = state.name
        result = state.result()  # raises the stage's error when the task failed
        self.results[label] = result
        return result

    def synth(self) -> dict[str, Any]:
        return self._run("synth", synth_task, "synth", [])

    def ingest(self, synth: dict[str, Any] | None) -> dict[str, Any]:
        from lift_core.data.ingest import resolve_datasets

        synth_outputs = synth["outputs"] if synth else None
        sources = [e.uri for e in resolve_datasets(self.cfg, synth_outputs)]
        return self._run("ingest", ingest_task, "ingest", sources, synth_outputs=synth_outputs)

    def decode(self, manifest_uri: str, label: str = "decode") -> dict[str, Any]:
        return self._run(label, decode_task, "decode", [manifest_uri], manifest_uri=manifest_uri, label=label)

    def train_critic(self, manifest_uri: str, frames_uri: str) -> dict[str, Any]:
        return self._run("train-critic", train_critic_task, "train_critic", [manifest_uri, frames_uri],
                         manifest_uri=manifest_uri, frames_uri=frames_uri)

    def generate(self, prompts_uri: str, split: str = "train", lora_uri: str | None = None,
                 tag: str = "base") -> dict[str, Any]:
        return self._run(f"generate-{tag}-{split}", generate_task, "generate", [prompts_uri, *([lora_uri] if lora_uri else [])],
                         prompts_uri=prompts_uri, split=split, lora_uri=lora_uri, tag=tag)

    def score(self, manifest_uris: list[str], frames_uris: list[str], adapter_uri: str) -> dict[str, Any]:
        return self._run("score", score_task, "score", [*manifest_uris, *frames_uris, adapter_uri],
                         manifest_uris=manifest_uris, frames_uris=frames_uris, adapter_uri=adapter_uri)

    def align(self, scores_uri: str, manifest_uris: list[str]) -> dict[str, Any]:
        return self._run("align", align_task, "align", [scores_uri, *manifest_uris],
                         scores_uri=scores_uri, manifest_uris=manifest_uris)

    def evaluate(self, prompts_uri: str, adapter_uri: str, align_outputs: dict[str, str]) -> dict[str, Any]:
        return self._run("evaluate", evaluate_task, "evaluate", [prompts_uri, adapter_uri, *align_outputs.values()],
                         prompts_uri=prompts_uri, adapter_uri=adapter_uri, align_outputs=align_outputs)

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per task of this run: its state, stage key, main counts and primary output."""
        rows = []
        for label, result in self.results.items():
            counts = ", ".join(f"{k}={v}" for k, v in sorted(result["counts"].items())[:5])
            primary = next(iter(result["outputs"].values()), "")
            rows.append({"task": label, "state": self.states.get(label, ""), "key": result["key"],
                         "counts": counts, "output": primary})
        return rows
