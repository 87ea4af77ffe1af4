"""``ingest``: the configured catalog datasets into one manifest (after rendering the demo data when set)."""

from __future__ import annotations

from prefect import flow

from flows.common import load_flow_config, publish_run_summary
from tasks.stages import Stages


@flow(name="ingest", log_prints=True)
def ingest(config: str = "configs/demo.yaml", overrides: list[str] | None = None) -> dict:
    run = Stages(load_flow_config(config, overrides))
    synth = run.synth() if run.cfg.data.synthetic else None
    result = run.ingest(synth)
    publish_run_summary(run, "ingest")
    return result
