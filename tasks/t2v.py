"""Prefect tasks of the text-to-video stages: generate, align, evaluate."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.common import task_options
from tasks.runner import execute


@task(**task_options("generate"), task_run_name="generate-{tag}-{split}")
def generate_task(cfg: dict[str, Any], prompts_uri: str, fingerprint: str, split: str = "train",
                  lora_uri: str | None = None, tag: str = "base") -> dict[str, Any]:
    from lift_core.t2v.generate import run_generate

    return execute(cfg, "generate", f"generate-{tag}",
                   lambda c, progress: run_generate(c, prompts_uri, split=split, lora_uri=lora_uri, tag=tag,
                                                    progress=progress))


@task(**task_options("align"), task_run_name="align")
def align_task(cfg: dict[str, Any], scores_uri: str, manifest_uris: list[str], fingerprint: str) -> dict[str, Any]:
    from lift_core.t2v.align import run_align

    return execute(cfg, "align", "align", lambda c, progress: run_align(c, scores_uri, manifest_uris, progress=progress))


@task(**task_options("evaluate"), task_run_name="evaluate")
def evaluate_task(cfg: dict[str, Any], prompts_uri: str, adapter_uri: str, align_outputs: dict[str, str],
                  fingerprint: str) -> dict[str, Any]:
    from lift_core.t2v.evaluate import run_evaluate

    return execute(cfg, "evaluate", "evaluate",
                   lambda c, progress: run_evaluate(c, prompts_uri, adapter_uri, align_outputs, progress=progress))
