"""``lift rescore``: score the new videos under one or more locations into the versioned scores store.

The same run as the scheduled ``rescore-generations`` flow, without Prefect. Prints the run's
summary as JSON. A batch whose mean reward is below ``rescore.min_mean_reward`` exits 3 (after
writing everything) when ``rescore.fail_on_low_reward`` is set, so cron jobs and CI notice.
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer

LOW_REWARD_EXIT = 3


def rescore(
    generations: Optional[List[str]] = typer.Option(
        None, "--generations", "-g",
        help="folder of videos with sidecar captions, manifest .parquet or LiFT .json (local or s3://); "
             "repeatable (default: rescore.generations)",
    ),
    critic: Optional[str] = typer.Option(
        None, "--critic", help="critic PEFT adapter dir (default: rescore.critic, else the newest train_critic output)"
    ),
    store: Optional[str] = typer.Option(None, "--store", help="scores store URI (default: rescore.store, under run_root)"),
    rescore_all: bool = typer.Option(
        False, "--rescore-all", help="score every video without a score under this critic (a new critic: everything)"
    ),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="pipeline config YAML"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """Score new generated videos with the latest critic; old scores and other critics' scores are kept."""
    from lift_core import storage
    from lift_core.config import load_config
    from lift_core.progress import log_progress
    from lift_core.rescore import run_rescore

    cfg = load_config(config, overrides)
    report = run_rescore(
        cfg,
        generations=[storage.abspath_if_local(g) for g in generations] if generations else None,
        critic=storage.abspath_if_local(critic) if critic else None,
        store=storage.abspath_if_local(store) if store else None,
        rescore_all=rescore_all,
        progress=log_progress,
    )
    out = report.to_dict()
    out.pop("trend")  # the whole store's history: in the store's trend.png and the run summary JSON
    typer.echo(json.dumps(out, indent=2, default=str))
    for warning in report.warnings:
        typer.echo(f"lift: warning: {warning}", err=True)
    if report.alert:
        typer.echo(f"lift: alert: {report.alert}", err=True)
        if cfg.rescore.fail_on_low_reward:
            raise typer.Exit(LOW_REWARD_EXIT)


def register(app: typer.Typer) -> None:
    app.command("rescore")(rescore)


__all__ = ["register", "rescore"]
