"""Prefect tasks of the data stages: synth, ingest, decode."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.common import task_options
from tasks.runner import execute


@task(**task_options("synth"), task_run_name="synth")
def synth_task(cfg: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    from lift_core.video.synth import run_synth

    return execute(cfg, "synth", "synth", lambda c, progress: run_synth(c, progress=progress))


@task(**task_options("ingest"), task_run_name="ingest")
def ingest_task(cfg: dict[str, Any], synth_outputs: dict[str, str] | None, fingerprint: str) -> dict[str, Any]:
    from lift_core.data.ingest import run_ingest

    return execute(cfg, "ingest", "ingest", lambda c, progress: run_ingest(c, synth_outputs, progress=progress))


@task(**task_options("decode"), task_run_name="{label}")
def decode_task(cfg: dict[str, Any], manifest_uri: str, fingerprint: str, label: str = "decode") -> dict[str, Any]:
    from lift_core.video.decode_stage import run_decode

    return execute(cfg, "decode", label, lambda c, progress: run_decode(c, manifest_uri, progress=progress))
