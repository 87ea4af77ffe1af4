"""``align``: reward-weighted fine-tuning of the T2V model on scored videos."""

from __future__ import annotations

from prefect import flow

from flows.common import load_flow_config, publish_run_summary
from tasks.stages import Stages


@flow(name="align", log_prints=True)
def align(scores: str, manifests: list[str], config: str = "configs/demo.yaml",
          overrides: list[str] | None = None) -> dict:
    run = Stages(load_flow_config(config, overrides))
    result = run.align(scores, manifests)
    publish_run_summary(run, "align")
    return result
