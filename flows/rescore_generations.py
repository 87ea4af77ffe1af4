"""``rescore-generations``: score new generated videos with the latest critic, on a schedule.

The recipe: one rescoring run (``lift_core.rescore.run_rescore``: discover, score what is new,
append to the versioned scores store), then its monitoring artifacts: a table of counts and reward
statistics, and a Markdown report with the store's reward trend. A batch whose mean reward is below
``rescore.min_mean_reward`` ends the run Failed (or Completed named "Warning" when
``rescore.fail_on_low_reward`` is false), with a message that says why. A watched folder of
``rescore.generations`` that does not exist yet has nothing to score: the run ends Completed, with a
warning in its logs, its message and its artifacts.

Deployed as ``rescore-generations/scheduled`` (prefect.yaml): cron from ``rescore.cron``, one run
at a time, a run due while another is running is cancelled (CANCEL_NEW).
"""

from __future__ import annotations

import base64
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron
from prefect.states import Completed, Failed, State

from flows.common import load_flow_config
from lift_core import storage
from lift_core.rescore import run_rescore
from lift_core.rescore.store import StoreBusy as LockTimeout  # no lock any more: the store stayed contended
from tasks.common import config_of, is_transient, progress_artifact

FLOW_NAME = "rescore-generations"
DEPLOYMENT_NAME = "scheduled"
ENTRYPOINT = "flows/rescore_generations.py:rescore_generations"
SUMMARY_KEY = "rescore-summary"
TREND_KEY = "rescore-trend"


def _retry_on_io_errors(task, task_run, state) -> bool:  # noqa: ARG001 - Prefect's signature
    """Retry what ``tasks.common.is_transient`` calls transient; a held lock means another run is working: no retry."""
    try:
        state.result()
    except LockTimeout:
        return False
    except Exception as err:
        return is_transient(err)
    return False


# Never cached: each run must look at the store and the folders as they are now.
@task(name="rescore", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=_retry_on_io_errors)
def rescore_task(
    cfg: dict[str, Any], generations: list[str] | None, critic: str | None, store: str | None, rescore_all: bool
) -> dict[str, Any]:
    report = run_rescore(config_of(cfg), generations, critic, store, rescore_all, progress=progress_artifact("rescore"))
    return report.to_dict()


def summary_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the table artifact: the run's counts, then reward statistics per dimension."""
    c = report["counts"]
    rows: list[dict[str, Any]] = [
        {"metric": "new videos", "value": c.get("new", 0)},
        {"metric": "scored", "value": c.get("scored", 0)},
        {"metric": "quarantined", "value": c.get("quarantined", 0)},
        {"metric": "unusable (incl. quarantined before)", "value": c.get("unusable", 0)},
        {"metric": "already scored or quarantined", "value": c.get("already_done", 0)},
        {"metric": "copies (same content)", "value": c.get("copies", 0)},
        {"metric": "listed", "value": c.get("listed", 0)},
    ]
    for s in report["batch_stats"]:
        for stat in ("mean", "std", "min", "p50", "max"):
            rows.append({"metric": f"reward {s['dimension']} {stat}", "value": s[stat]})
    rows += [{"metric": "critic_id", "value": report["critic_id"]}, {"metric": "mode", "value": report["mode"]},
             {"metric": "alert", "value": report["alert"] or ""}]
    rows += [{"metric": "warning", "value": w} for w in report.get("warnings", [])]
    return rows


def trend_markdown(report: dict[str, Any]) -> str:
    """Markdown with the trend PNG inline (a data URI: the artifact stays readable without the store)."""
    lines = [f"# Rescoring run `{report['run_id']}`", ""]
    if report["alert"]:
        lines += [f"**ALERT:** {report['alert']}", ""]
    for w in report.get("warnings", []):
        lines += [f"**Warning:** {w}", ""]
    c = report["counts"]
    lines += [f"{c.get('new', 0)} new videos, {c.get('scored', 0)} scored, {c.get('quarantined', 0)} quarantined, "
              f"critic `{report['critic_id']}` ({report['mode']}). Store: `{report['store']}`.", ""]
    png_uri = report["outputs"].get("trend_png")
    if png_uri:
        b64 = base64.b64encode(storage.read_bytes(png_uri)).decode()
        lines += ["## Mean reward per day and dimension (whole store)", "",
                  f"![reward trend](data:image/png;base64,{b64})", "", f"PNG: `{png_uri}`", ""]
    if report["trend"]:
        lines += ["| critic | day | n | semantic | fidelity | motion | overall |", "|---|---|---|---|---|---|---|"]
        for r in report["trend"][-30:]:
            vals = [r.get(k) for k in ("reward_semantic", "reward_fidelity", "reward_motion", "reward")]
            cells = " | ".join("" if v is None else f"{v:.3f}" for v in vals)
            lines.append(f"| `{r['critic_id'][:10]}` | {r['day']} | {r['n']} | {cells} |")
    return "\n".join(lines)


@flow(name=FLOW_NAME, log_prints=True)
def rescore_generations(
    config: str = "configs/demo.yaml",
    overrides: list[str] | None = None,
    generations: list[str] | None = None,
    critic: str | None = None,
    store: str | None = None,
    rescore_all: bool = False,
) -> dict[str, Any] | State:
    cfg = load_flow_config(config, overrides)
    report = rescore_task(cfg, generations, critic, store, rescore_all)

    create_table_artifact(table=summary_table(report), key=SUMMARY_KEY,
                          description=f"Rescoring {report['run_id']}: counts and reward statistics of the new batch")
    create_markdown_artifact(markdown=trend_markdown(report), key=TREND_KEY,
                             description="Mean reward per day and per dimension over the whole scores store")
    c = report["counts"]
    for w in report["warnings"]:
        get_run_logger().warning("%s", w)
    print(f"rescored: {c['new']} new, {c['scored']} scored, {c['quarantined']} quarantined; "
          f"mean reward {report['mean_reward']}")
    if report["alert"]:
        if cfg["rescore"]["fail_on_low_reward"]:
            return Failed(message=f"Low reward: {report['alert']}")
        return Completed(name="Warning", message=f"Low reward: {report['alert']}", data=report)
    if report["warnings"] and not c.get("listed"):
        # A watched folder that no generation has written to yet: nothing to do is not a failure.
        return Completed(message="Nothing to score: " + "; ".join(report["warnings"]), data=report)
    return report


def scheduled_deployment_spec(config: str = "configs/demo.yaml") -> dict[str, Any]:
    """The ``rescore-generations/scheduled`` entry of prefect.yaml, with the cron of ``config``."""
    from flows.common import REPO_ROOT
    from lift_core.config import load_config

    path = config if config.startswith("/") else str(REPO_ROOT / config)
    rc = load_config(path).rescore
    return {
        "name": DEPLOYMENT_NAME,
        "entrypoint": ENTRYPOINT,
        "description": "Score new generated videos with the latest critic; trend and low-reward alert.",
        "parameters": {"config": config, "overrides": [], "rescore_all": False},
        "schedules": [{"cron": rc.cron, "timezone": rc.timezone, "active": True}],
        "concurrency_limit": {"limit": 1, "collision_strategy": "CANCEL_NEW"},
        "work_pool": {"name": "local", "work_queue_name": "default"},
    }


def scheduled_deployment(config: str = "configs/demo.yaml", work_pool: str | None = None):
    """The same deployment built in Python (``.apply()`` registers it): for a cron changed in config."""
    spec = scheduled_deployment_spec(config)
    sched = spec["schedules"][0]
    return rescore_generations.to_deployment(
        name=DEPLOYMENT_NAME,
        schedules=[Cron(sched["cron"], timezone=sched["timezone"])],
        parameters=spec["parameters"],
        description=spec["description"],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        work_pool_name=work_pool,
    )
