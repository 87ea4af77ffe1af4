"""Shared by flows: load and validate the config once, hand tasks a plain dict, publish the run summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lift_core.config import load_config

if TYPE_CHECKING:
    from tasks.stages import Stages

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_flow_config(config: str, overrides: list[str] | None) -> dict[str, Any]:
    """Relative config paths resolve against the checkout, so workers started anywhere find them."""
    path = Path(config)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    cfg = load_config(path, overrides)
    # A relative run_root is anchored at the checkout: deployments and the CLI write to the same place.
    if "://" not in cfg.run_root and not os.path.isabs(cfg.run_root):
        cfg = load_config(path, [*(overrides or []), f"run_root={(REPO_ROOT / cfg.run_root).resolve()}"])
    return cfg.model_dump(mode="json")


def publish_run_summary(run: "Stages", flow_name: str) -> None:
    """A table artifact of the flow run (every run, cached or not): each task's state, key and output.

    Waits for the run's stages first (``Stages.wait``): it sums up finished tasks only."""
    from tasks.common import publish_table

    rows = run.summary_rows()
    cached = sum(1 for r in rows if r["state"] == "Cached")
    publish_table(rows, f"{flow_name}-run",
                  f"{flow_name}: {len(rows)} tasks, {cached} cache hits; run root {run.cfg.run_root}")
    print(f"{flow_name}: {len(rows)} tasks, {cached} cache hits")


def artifact_ui_url(key: str, flow_run_id: Any = None) -> str | None:
    """The UI page of artifact ``key``: the version this flow run made, else the key's page (its latest
    version: a cached task publishes nothing new). None when no UI URL is configured."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if not ui:
        return None
    ui = ui.rstrip("/")
    if flow_run_id is not None:
        with get_client(sync_client=True) as client:
            made = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]),
                                               flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
                sort=ArtifactSort.CREATED_DESC, limit=1)
        if made:
            return f"{ui}/artifacts/artifact/{made[0].id}"
    return f"{ui}/artifacts/key/{key}"


def publish_results(run: "Stages", flow_name: str) -> str:
    """What the run found (``lift_core.results``), read from its stage outputs: the ``<flow>-results``
    Markdown artifact, with this flow run's UI link and a link to the evaluation's report artifact (which
    embeds the plots); returns the Markdown. Waits for the run's stages first."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    from lift_core.results import run_summary, summary_markdown
    from tasks.common import artifact_key

    run.wait()
    evaluated = [label for label, stage in run.stage_of.items() if stage == "evaluate" and label in run.results]
    report_key = artifact_key(evaluated[-1], "report") if evaluated else None
    report_url = artifact_ui_url(report_key, flow_run.id) if report_key else None
    summary = run_summary([r["out_uri"] for r in run.results.values()], ui_url=flow_run.ui_url,
                          report_url=report_url, report_artifact=report_key)
    markdown = summary_markdown(summary)
    create_markdown_artifact(markdown=markdown, key=f"{flow_name}-results",
                             description=f"{flow_name}: critic agreement, base vs aligned, link to the report and plots")
    return markdown
