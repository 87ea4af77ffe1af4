"""``decode``: every video of a manifest into frames Parquet shards; unreadable ones into the quarantine."""

from __future__ import annotations

from prefect import flow

from flows.common import load_flow_config, publish_run_summary
from tasks.stages import Stages


@flow(name="decode", log_prints=True)
def decode(manifest: str, config: str = "configs/demo.yaml", overrides: list[str] | None = None) -> dict:
    run = Stages(load_flow_config(config, overrides))
    result = run.decode(manifest)
    publish_run_summary(run, "decode")
    return result
