"""``generate``: videos for a prompt split with the T2V model (optionally with a LoRA)."""

from __future__ import annotations

from prefect import flow

from flows.common import load_flow_config, publish_run_summary
from tasks.stages import Stages


@flow(name="generate", log_prints=True)
def generate(prompts: str, split: str = "train", lora: str | None = None, tag: str = "base",
             config: str = "configs/demo.yaml", overrides: list[str] | None = None) -> dict:
    run = Stages(load_flow_config(config, overrides))
    result = run.generate(prompts, split=split, lora_uri=lora, tag=tag)
    publish_run_summary(run, "generate")
    return result
