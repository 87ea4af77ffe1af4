"""``lift run``: the lift-full flow in-process; ``lift plan``: what a config will run, checked, without running it.

Without ``PREFECT_API_URL`` Prefect starts a temporary local server for the run; with it, the run is
recorded on that server (``make demo``'s, or a team's). Prints each stage's outputs as JSON.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional

import typer


def run(
    config: str = typer.Option("configs/demo.yaml", "--config", "-c", help="pipeline config YAML"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """Run the whole lift-full DAG in this process."""
    from lift_core.config import load_config

    load_config(config, overrides)  # fail fast, with the key's name, before Prefect starts
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary server's 20 s default is too short on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from flows.lift_full import lift_full

    state = lift_full(config=config, overrides=list(overrides or []), return_state=True)
    if not state.is_completed():
        raise RuntimeError(f"lift-full ended {state.name}: {state.message or ''}".strip())
    results = state.result()
    typer.echo(json.dumps({label: r["outputs"] for label, r in results.items()}, indent=2))


def plan(
    config: str = typer.Option("configs/demo.yaml", "--config", "-c", help="pipeline config YAML"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """Print, per stage, world size, batches, accumulation, steps, epochs, actors and GPUs; fail on
    impossible arithmetic. Runs no model and needs no GPU."""
    from lift_core.config import load_config
    from lift_core.plan import format_plan
    from lift_core.plan import plan as make_plan

    cfg = load_config(config, overrides)
    typer.echo(format_plan(make_plan(cfg), cfg))


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("plan")(plan)
