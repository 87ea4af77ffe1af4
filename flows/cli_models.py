"""``lift build-demo-models``: pre-train the demo's bases once and ship them in the catalog.

Real LiFT users download pre-trained bases; the demo ships tiny ones, built by this command from the
build settings of ``--config`` (``configs/demo.yaml``). Resumable: a rerun continues the interrupted
pre-training runs from their checkpoints under the config's ``run_root``.
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer


def build_demo_models(
    config: str = typer.Option("configs/demo.yaml", "--config", "-c", help="config whose build settings to use"),
    only: Optional[List[str]] = typer.Option(None, "--only", help="build only this model (repeatable): "
                                                                  "lift-demo-vlm or lift-demo-t2v"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """Pre-train the demo's VLM and T2V bases, copy them next to the catalog and declare them there
    with every file's sha256 and their build record."""
    import logging

    from lift_core.config import load_config
    from lift_core.demo_models import build_demo_models as build
    from lift_core.progress import TerminalProgress

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(config, overrides)
    built = build(cfg, only=list(only or []) or None, progress=TerminalProgress("build-demo-models"),
                  on_built=lambda name, e: typer.echo(f"built {name}: {json.dumps(e['record']['figures'], default=str)}"))
    typer.echo(json.dumps({n: {"path": e["path"], "wall_time_s": e["record"]["wall_time_s"]} for n, e in built.items()},
                          indent=2))


def register(app: typer.Typer) -> None:
    app.command("build-demo-models")(build_demo_models)
