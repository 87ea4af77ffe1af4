"""Prefect tasks of the data stages: synth, ingest, decode."""

from __future__ import annotations

from typing import Any

from prefect import task

from lift_core.data.ingest import run_ingest
from lift_core.video.decode_stage import run_decode
from lift_core.video.synth import run_synth
from tasks.common import config_of, progress_artifact, publish_summary, task_options


@task(**task_options("synth"))
def synth_task(cfg: dict[str, Any], code_version: str) -> dict[str, Any]:
    result = run_synth(config_of(cfg)).to_dict()
    publish_summary(result, "Synthetic LiFT-HRA data (labels known by construction)")
    return result


@task(**task_options("ingest"))
def ingest_task(cfg: dict[str, Any], synth_outputs: dict[str, str] | None, code_version: str) -> dict[str, Any]:
    result = run_ingest(config_of(cfg), synth_outputs, progress=progress_artifact("ingest")).to_dict()
    publish_summary(result, "Ingest: manifest, prompts and quarantined entries")
    return result


@task(**task_options("decode"))
def decode_task(cfg: dict[str, Any], manifest_uri: str, code_version: str, label: str = "decode") -> dict[str, Any]:
    result = run_decode(config_of(cfg), manifest_uri, progress=progress_artifact(label)).to_dict()
    publish_summary({**result, "stage": label}, f"Decode ({label}): frames and quarantined inputs")
    return result
