"""``lift run``: the lift-full flow in-process (Prefect's ephemeral API unless PREFECT_API_URL is set)."""

from __future__ import annotations

import json
from typing import List, Optional

import typer


def run(
    config: str = typer.Option("configs/demo.yaml", "--config", "-c", help="pipeline config YAML"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """Run the whole lift-full DAG in this process."""
    import os

    from lift_core.config import load_config

    load_config(config, overrides)  # fail fast, with the key's name, before Prefect starts
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.lift_full import lift_full

    result = lift_full(config=config, overrides=list(overrides or []))
    typer.echo(json.dumps({k: v.get("outputs") for k, v in result.items() if isinstance(v, dict)}, indent=2))


def register(app: typer.Typer) -> None:
    app.command("run")(run)
