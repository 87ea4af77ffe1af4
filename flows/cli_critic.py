"""``lift train-critic``: the critic stage without Prefect.

Without ``--manifest``/``--frames`` it first runs the data stages lift-full runs (synth when
``data.synthetic`` is set, ingest, decode); every stage is cached under ``run_root``, so a rerun only
does what changed, and a crashed training resumes from its last checkpoint. With ``--out DIR`` the
adapter and the metrics are copied to ``DIR/adapter/`` and ``DIR/metrics.json``. Prints a JSON
summary with the held-out agreement table.
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer


def _copy_tree(src: str, dst: str) -> None:
    """Copy a folder's content files between fsspec locations, replacing ``dst``.

    The copy is made in a hidden sibling first, so an interrupted copy never leaves a half-written
    adapter where a whole one was; hidden files (temporary files of atomic writes) are not copied."""
    import uuid

    from lift_core import storage

    sfs, spath = storage.fs_and_path(src)
    dfs, dpath = storage.fs_and_path(dst)
    dpath = dpath.rstrip("/")
    parent, name = dpath.rsplit("/", 1)
    staging = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        dfs.makedirs(staging, exist_ok=True)
        for f in sfs.find(spath):
            rel = f[len(spath.rstrip("/")) + 1:]
            if any(part.startswith(".") for part in rel.split("/")):
                continue
            with sfs.open(f, "rb") as fin:
                storage.write_bytes_atomic(storage.to_uri(dfs, f"{staging}/{rel}"), fin.read())
        if dfs.exists(dpath):
            dfs.rm(dpath, recursive=True)
        dfs.mv(staging, dpath, recursive=True)
    finally:
        if dfs.exists(staging):
            dfs.rm(staging, recursive=True)


def train_critic(
    config: str = typer.Option(..., "--config", "-c", help="pipeline config YAML"),
    out: Optional[str] = typer.Option(None, "--out", help="copy adapter/ and metrics.json here"),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="manifest Parquet (default: run ingest)"),
    frames: Optional[str] = typer.Option(None, "--frames", help="decoded frames (default: run decode)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides key=value"),
) -> None:
    """Train the LiFT critic (LoRA, Ray Train) and measure its agreement with held-out human labels."""
    import logging

    from lift_core import storage
    from lift_core.config import load_config
    from lift_core.metrics.agreement import agreement_table
    from lift_core.output_paths import FOLDER, PARENT, Output, check_outputs, table_inputs
    from lift_core.progress import log_progress
    from tasks.stages import InlineStages

    def check_out(data: list[tuple[str, str | None]]) -> None:
        if out is not None:
            check_outputs([Output("--out", out, PARENT), Output("--out's adapter/", storage.join(out, "adapter"), FOLDER),
                           Output("--out's metrics.json", storage.join(out, "metrics.json"))],
                          [("--config", config), *data])

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(config, overrides or [])
    if (manifest is None) != (frames is None):
        raise ValueError("give both --manifest and --frames, or neither (then the data stages run first)")
    check_out([*table_inputs("--manifest", manifest), ("--frames", frames)])
    run = InlineStages(cfg, progress=log_progress)
    if manifest is None:
        data = run.prepare_data()
        manifest, frames = data["manifest"], data["frames"]
        check_out([("the data stages' manifest", manifest), ("the data stages' frames", frames)])
    for name, uri in (("--manifest", manifest), ("--frames", frames)):
        if not storage.exists(uri):
            raise FileNotFoundError(f"{name} not found: {uri}")
    result = run.train_critic(manifest, frames)
    outputs = dict(result["outputs"])
    if out is not None:
        _copy_tree(outputs["adapter"], storage.join(out, "adapter"))
        storage.write_bytes_atomic(storage.join(out, "metrics.json"), storage.read_bytes(outputs["metrics"]))
        outputs.update({"adapter": storage.join(out, "adapter"), "metrics": storage.join(out, "metrics.json")})
    m = result["metrics"]
    summary = {
        "stage_dir": result["out_uri"],
        "outputs": outputs,
        "critic_id": m.get("critic_id"),
        "n_test": m.get("n_test"),
        "steps": m.get("steps"),
        "train_seconds": m.get("train_seconds"),
        "agreement": agreement_table(m),
    }
    typer.echo(json.dumps(summary, indent=2))


def register(app: typer.Typer) -> None:
    app.command("train-critic")(train_critic)
