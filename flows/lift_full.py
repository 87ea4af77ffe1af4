"""``lift-full``: the whole LiFT DAG as one recipe."""

from __future__ import annotations

from prefect import flow

from flows.common import load_flow_config
from lift_core.storage import code_version
from tasks.data import decode_task, ingest_task, synth_task


@flow(name="lift-full", log_prints=True)
def lift_full(config: str = "configs/demo.yaml", overrides: list[str] | None = None) -> dict:
    cfg = load_flow_config(config, overrides)
    cv = code_version()

    synth = synth_task(cfg, cv) if cfg["data"]["synthetic"] else None
    ingest = ingest_task(cfg, synth["outputs"] if synth else None, cv)
    decode = decode_task(cfg, ingest["outputs"]["manifest"], cv)

    return {"ingest": ingest, "decode": decode}
