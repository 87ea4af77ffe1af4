"""``lift synth``, ``lift ingest``, ``lift decode``: the data stages without Prefect."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from data_catalog.readers import READERS

FORMATS = ", ".join(READERS)


def synth(
    out: str = typer.Option(..., "--out", help="output folder (fsspec URI)"),
    n: int = typer.Option(240, "--n", help="rated videos (LiFT-HRA format)"),
    seed: int = typer.Option(0, "--seed"),
    n_real: int = typer.Option(24, "--n-real", help="clean 'real' videos (HD-VILA set)"),
    n_prompts: int = typer.Option(24, "--n-prompts"),
    height: int = typer.Option(64, "--height"),
    width: int = typer.Option(64, "--width"),
    num_frames: int = typer.Option(17, "--frames"),
) -> None:
    """Render synthetic LiFT-HRA data whose labels are known by construction."""
    from lift_core.config import SyntheticConfig
    from lift_core.video.synth import write_synthetic

    cfg = SyntheticConfig(n=n, n_real=n_real, n_prompts=n_prompts, seed=seed, height=height, width=width,
                          num_frames=num_frames)
    typer.echo(json.dumps(write_synthetic(out, cfg), indent=2))


def ingest(
    format: str = typer.Option(..., "--format", help=f"one of: {FORMATS}"),
    source: str = typer.Option(..., "--source", help="source file or folder (fsspec URI)"),
    out: str = typer.Option(..., "--out", help="manifest.parquet to write"),
    videos_root: Optional[str] = typer.Option(None, "--videos-root", help="where relative video paths resolve"),
) -> None:
    """Read one source into a manifest (videos) or prompt table; rejects go to <out>.quarantine.parquet."""
    from lift_core.data.ingest import ingest_source

    if format not in READERS:
        raise ValueError(f"unknown --format {format!r}; expected one of: {FORMATS}")
    counts = ingest_source(format, source, out, videos_root)
    typer.echo(json.dumps(counts))


def decode(
    manifest: str = typer.Option(..., "--manifest", help="manifest Parquet"),
    out: str = typer.Option(..., "--out", help="output folder: frames/ and quarantine.parquet"),
    frames: int = typer.Option(8, "--frames", min=1),
    height: int = typer.Option(56, "--height", min=2),
    width: int = typer.Option(56, "--width", min=2),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", help="CPUs for local Ray"),
) -> None:
    """Decode every video of a manifest into frames Parquet shards (Ray Data)."""
    from lift_core import storage
    from lift_core.config import DecodeConfig, RayConfig
    from lift_core.distributed.ray_runtime import ensure_ray
    from lift_core.video.decode_stage import decode_manifest

    if not storage.exists(manifest):
        raise FileNotFoundError(f"manifest not found: {manifest}")
    ensure_ray(RayConfig(num_cpus=num_cpus))
    res = decode_manifest(manifest, out, DecodeConfig(frames=frames, height=height, width=width))
    typer.echo(json.dumps(res))


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
    app.command("ingest")(ingest)
    app.command("decode")(decode)
