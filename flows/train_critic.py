"""``train-critic``: LoRA-tune the critic on the rated train split; held-out agreement in metrics.json."""

from __future__ import annotations

from prefect import flow

from flows.common import load_flow_config, publish_run_summary
from tasks.stages import Stages


@flow(name="train-critic", log_prints=True)
def train_critic(manifest: str, frames: str, config: str = "configs/demo.yaml",
                 overrides: list[str] | None = None) -> dict:
    run = Stages(load_flow_config(config, overrides))
    result = run.train_critic(manifest, frames)
    publish_run_summary(run, "train-critic")
    return result
