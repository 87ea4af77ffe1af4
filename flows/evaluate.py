"""``evaluate``: base vs aligned model on held-out prompts, judged by the critic; report with plots."""

from __future__ import annotations

from prefect import flow

from flows.common import load_flow_config, publish_run_summary
from tasks.stages import Stages


@flow(name="evaluate", log_prints=True)
def evaluate(prompts: str, adapter: str, align_outputs: dict[str, str], config: str = "configs/demo.yaml",
             overrides: list[str] | None = None) -> dict:
    run = Stages(load_flow_config(config, overrides))
    result = run.evaluate(prompts, adapter, align_outputs)
    publish_run_summary(run, "evaluate")
    return result
