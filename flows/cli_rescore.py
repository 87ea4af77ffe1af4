"""``lift rescore``: score the new videos under one or more locations into the versioned scores store.

The same run as the scheduled ``rescore-generations`` flow, without Prefect. Prints the run's
summary as JSON. A batch whose mean reward is below ``rescore.min_mean_reward`` exits 3 (after
writing everything) when ``rescore.fail_on_low_reward`` is set, so cron jobs and CI notice.

``lift rescore-store history|compact|vacuum|migrate``: the store's Delta tables by hand (its
versions; OPTIMIZE; VACUUM; converting a store of the old Parquet format). Each prints JSON.
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


# --------------------------------------------------------------------------- lift rescore-store
store_app = typer.Typer(name="rescore-store", no_args_is_help=True,
                        help="The scores store's Delta tables: history, compact (OPTIMIZE), vacuum, migrate.")

_STORE = typer.Option(None, "--store", help="scores store URI (default: rescore.store, under run_root)")
_CONFIG = typer.Option(None, "--config", "-c", help="pipeline config YAML")
_OVERRIDES = typer.Argument(None, help="config overrides as dotted.key=value")


def _store(store: Optional[str], config: Optional[str], overrides: Optional[List[str]], migrate: bool = True):
    from lift_core import storage
    from lift_core.config import load_config
    from lift_core.rescore import ScoresStore

    cfg = load_config(config, overrides)
    # A default left as it is keeps its "{run_root}" (config_from_dict expands only the values given).
    uri = store or cfg.rescore.store
    return ScoresStore(storage.abspath_if_local(uri), retries=cfg.rescore.commit_retries, migrate=migrate), cfg


def _echo(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@store_app.command("history")
def store_history(
    store: Optional[str] = _STORE,
    table: str = typer.Option("scores", "--table", help="scores, quarantine or index"),
    limit: Optional[int] = typer.Option(20, "--limit", help="newest versions to show (0: all)"),
    config: Optional[str] = _CONFIG,
    overrides: Optional[List[str]] = _OVERRIDES,
) -> None:
    """The versions of one table, newest first: operation, the run that wrote it, rows inserted."""
    if table not in ("scores", "quarantine", "index"):
        raise typer.BadParameter(f"{table!r}: expected scores, quarantine or index", param_hint="--table")
    st, _ = _store(store, config, overrides)
    rows = st.history(limit or None, table=table)
    _echo([{k: r[k] for k in ("version", "timestamp", "operation", "lift", "rows_inserted", "files_added",
                              "files_removed")} for r in rows])


@store_app.command("compact")
def store_compact(
    store: Optional[str] = _STORE,
    vacuum: bool = typer.Option(True, "--vacuum/--no-vacuum", help="VACUUM after compacting"),
    retention_hours: Optional[float] = typer.Option(
        None, "--retention-hours", help="VACUUM keeps the files of versions this recent (default: "
                                        "rescore.vacuum_retention_hours)"),
    config: Optional[str] = _CONFIG,
    overrides: Optional[List[str]] = _OVERRIDES,
) -> None:
    """OPTIMIZE every table (small files of many commits into few), then VACUUM; rows are unchanged."""
    st, cfg = _store(store, config, overrides)
    before = {name: t.file_count() for name, t in st.tables().items()}
    out = {"store": st.uri, "files_before": before, "compacted": st.compact()}
    if vacuum:
        hours = cfg.rescore.vacuum_retention_hours if retention_hours is None else retention_hours
        out["vacuumed"] = {k: len(v) for k, v in st.vacuum(hours).items()}
    out["files_after"] = {name: t.file_count() for name, t in st.tables().items()}
    out["version"] = st.version()
    _echo(out)


@store_app.command("vacuum")
def store_vacuum(
    store: Optional[str] = _STORE,
    retention_hours: Optional[float] = typer.Option(
        None, "--retention-hours", help="keep the files of versions this recent (default: rescore.vacuum_retention_hours)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the files, delete nothing"),
    config: Optional[str] = _CONFIG,
    overrides: Optional[List[str]] = _OVERRIDES,
) -> None:
    """VACUUM every table: delete data files that no version younger than the retention reads."""
    st, cfg = _store(store, config, overrides)
    hours = cfg.rescore.vacuum_retention_hours if retention_hours is None else retention_hours
    _echo({"store": st.uri, "retention_hours": hours, "dry_run": dry_run, "files": st.vacuum(hours, dry_run)})


@store_app.command("migrate")
def store_migrate(
    store: Optional[str] = _STORE,
    config: Optional[str] = _CONFIG,
    overrides: Optional[List[str]] = _OVERRIDES,
) -> None:
    """Convert a store of the old Parquet format into the Delta tables; the old files move to _legacy/.

    A rerun, or a store already converted, changes nothing."""
    from lift_core.rescore import legacy

    st, _ = _store(store, config, overrides, migrate=False)
    _echo(legacy.migrate(st))


def register(app: typer.Typer) -> None:
    app.command("rescore")(rescore)
    app.add_typer(store_app, name="rescore-store")


__all__ = ["register", "rescore", "store_app"]
