"""``lift synth``, ``lift ingest``, ``lift decode``: the data stages without Prefect.

Each prints a JSON summary on stdout. Expected failures raise ValueError/FileNotFoundError, which
``flows.cli.main`` turns into one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from data_catalog.readers import READERS

FORMATS = ", ".join(READERS)


def synth(
    out: str = typer.Option(..., "--out", help="output folder (fsspec URI)"),
    n: int = typer.Option(240, "--n", min=0, help="rated videos (LiFT-HRA format)"),
    seed: int = typer.Option(0, "--seed"),
    n_real: int = typer.Option(24, "--n-real", min=0, help="clean 'real' videos (HD-VILA set)"),
    n_prompts: int = typer.Option(24, "--n-prompts", min=0, help="prompts in the VBench-format suite"),
    height: int = typer.Option(64, "--height", min=16, help="frame height (even)"),
    width: int = typer.Option(64, "--width", min=16, help="frame width (even)"),
    num_frames: int = typer.Option(17, "--frames", min=2),
    fps: int = typer.Option(8, "--fps", min=1),
) -> None:
    """Render synthetic LiFT-HRA data whose labels are known by construction."""
    from lift_core.config import SyntheticConfig
    from lift_core.output_paths import FOLDER, Output, check_outputs
    from lift_core.video.synth import write_synthetic

    cfg = _validated(
        SyntheticConfig,
        {"n": n, "n_real": n_real, "n_prompts": n_prompts, "seed": seed, "height": height, "width": width,
         "num_frames": num_frames, "fps": fps},
        options={"num_frames": "--frames", "n_real": "--n-real", "n_prompts": "--n-prompts"},
    )
    check_outputs([Output("--out", out, FOLDER)], [])
    typer.echo(json.dumps(write_synthetic(out, cfg), indent=2))


def _validated(model, values: dict, options: dict[str, str] | None = None):
    """Build a config section; a bad value becomes one ValueError line naming the option."""
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as err:
        names = options or {}
        parts = [f"{names.get(str(e['loc'][0]), '--' + str(e['loc'][0]))}: {e['msg']}" for e in err.errors()]
        raise ValueError("; ".join(parts)) from None


def ingest(
    format: str = typer.Option(..., "--format", help=f"one of: {FORMATS}"),
    source: str = typer.Option(..., "--source", help="source file or folder (fsspec URI)"),
    out: str = typer.Option(..., "--out", help="manifest.parquet (prompt formats: the prompt table) to write"),
    videos_root: Optional[str] = typer.Option(None, "--videos-root", help="where relative video paths resolve"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="pipeline config YAML (its data.* limits "
                                         "and data.split apply)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """Read one source into a manifest; rejected entries and missing videos go to <out>.quarantine.parquet."""
    from lift_core.config import load_config
    from lift_core.data.ingest import ingest_source, quarantine_uri_for
    from lift_core.data.inputs import InputLimits
    from lift_core.output_paths import Output, check_outputs

    if format not in READERS:
        raise ValueError(f"unknown --format {format!r}; expected one of: {FORMATS}")
    check_outputs([Output("--out", out), Output("--out's quarantine", quarantine_uri_for(out))],
                  [("--source", source), ("--videos-root", videos_root)])
    cfg = load_config(config, overrides)  # the same data.* bounds as lift score and the ingest stage
    counts = ingest_source(format, source, out, videos_root, split=cfg.data.split,
                           limits=InputLimits.from_config(cfg.data))
    typer.echo(json.dumps({"out": out, "quarantine": quarantine_uri_for(out), "counts": counts}, indent=2))


def decode(
    manifest: str = typer.Option(..., "--manifest", help="manifest Parquet"),
    out: str = typer.Option(..., "--out", help="output folder: frames/ and quarantine.parquet"),
    frames: int = typer.Option(8, "--frames", min=1, help="frames sampled uniformly per video"),
    height: int = typer.Option(56, "--height", min=2),
    width: int = typer.Option(56, "--width", min=2),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="videos per Ray task and per shard"),
    backend: str = typer.Option("auto", "--backend", help="auto (decord, PyAV fallback), decord or pyav"),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs for a local Ray"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="pipeline config YAML (its data.* limits "
                                         "apply; the options above set the decode settings)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """Decode every video of a manifest into frames Parquet shards (Ray Data); rerunning resumes.

    Each row's file must hold the video its ``video_id`` names (else it is quarantined with both ids);
    relative URIs resolve against the manifest's folder, not the working directory."""
    from lift_core import storage
    from lift_core.config import DecodeConfig, RayConfig, load_config
    from lift_core.data.inputs import InputLimits
    from lift_core.distributed.ray_runtime import ensure_ray
    from lift_core.output_paths import FOLDER, PARENT, Output, check_outputs, table_inputs
    from lift_core.video.decode_stage import PARAMS_FILE, QUARANTINE_FILE, decode_manifest

    if not storage.exists(manifest):
        raise FileNotFoundError(f"manifest not found: {manifest}")
    check_outputs([Output("--out", out, PARENT), Output("--out's frames/", storage.join(out, "frames"), FOLDER),
                   Output("--out's quarantine", storage.join(out, QUARANTINE_FILE)),
                   Output("--out's settings file", storage.join(out, PARAMS_FILE))],
                  table_inputs("--manifest", manifest))
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown --backend {backend!r}; expected auto, decord or pyav")
    params = _validated(
        DecodeConfig, {"frames": frames, "height": height, "width": width, "batch_size": batch_size, "backend": backend},
        options={"batch_size": "--batch-size"},
    )
    ensure_ray(RayConfig(num_cpus=num_cpus))
    res = decode_manifest(manifest, out, params, limits=InputLimits.from_config(load_config(config, overrides).data))
    typer.echo(json.dumps(res, indent=2))


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
    app.command("ingest")(ingest)
    app.command("decode")(decode)
