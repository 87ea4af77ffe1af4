"""``score``: critic rewards for decoded videos (manifests paired with their frames)."""

from __future__ import annotations

from prefect import flow

from flows.common import load_flow_config, publish_run_summary
from tasks.stages import Stages


@flow(name="score", log_prints=True)
def score(manifests: list[str], frames: list[str], adapter: str, config: str = "configs/demo.yaml",
          overrides: list[str] | None = None) -> dict:
    run = Stages(load_flow_config(config, overrides))
    result = run.score(manifests, frames, adapter)
    publish_run_summary(run, "score")
    return result
