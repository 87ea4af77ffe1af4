"""The summary each stage leaves in the Prefect UI: a table or a Markdown artifact built from its outputs.

The builders are plain functions of a ``StageResult`` dict (and the files it names), so they are
tested without a Prefect server; ``publish`` creates the artifacts inside a task run.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Callable

from lift_core import storage
from lift_core.config import DIMENSIONS
from tasks.common import artifact_key

MAX_QUARANTINE_ROWS = 50
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "_none_"
    cols = columns or list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def counts_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"count": k, "value": v} for k, v in sorted(result.get("counts", {}).items())]


def quarantine_rows(uri: str | None, limit: int = MAX_QUARANTINE_ROWS) -> tuple[int, list[dict[str, Any]]]:
    """(total, first ``limit`` rows) of a quarantine table; (0, []) when there is none."""
    if not uri or not storage.exists(uri):
        return 0, []
    t = storage.read_table(uri, columns=["uri", "video_id", "stage", "error"])
    return t.num_rows, t.slice(0, limit).to_pylist()


def _header(result: dict[str, Any], title: str) -> str:
    return f"# {title}\n\nStage key `{result['key']}` · output `{result['out_uri']}`\n"


def _quarantine_section(result: dict[str, Any]) -> str:
    total, rows = quarantine_rows(result.get("outputs", {}).get("quarantine"))
    head = f"## Quarantine: {total} input(s)\n\n"
    if not total:
        return head + "Every input was usable.\n"
    more = f"\n\n(first {len(rows)} of {total}; all in `{result['outputs']['quarantine']}`)" if total > len(rows) else ""
    return head + md_table(rows, ["uri", "video_id", "error"]) + more + "\n"


def data_summary(result: dict[str, Any], title: str) -> str:
    """synth, ingest, decode: counts, outputs and the quarantined inputs with their reasons."""
    outputs = [{"output": k, "uri": v} for k, v in sorted(result.get("outputs", {}).items())]
    parts = [_header(result, title), "## Counts\n\n" + md_table(counts_rows(result)),
             "## Outputs\n\n" + md_table(outputs)]
    if "quarantine" in result.get("outputs", {}):
        parts.append(_quarantine_section(result))
    return "\n\n".join(parts) + "\n"


def critic_metrics_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per dimension of metrics.json: held-out agreement next to the majority-class baseline."""
    rows = []
    for dim in DIMENSIONS:
        m = metrics.get(dim)
        if not isinstance(m, dict):
            continue
        rows.append({
            "dimension": dim, "n": m.get("n"), "accuracy": m.get("accuracy"), "macro_f1": m.get("macro_f1"),
            "spearman": m.get("spearman"), "majority_label": m.get("majority_label"),
            "majority_accuracy": m.get("majority_accuracy"), "majority_macro_f1": m.get("majority_macro_f1"),
        })
    return rows


def critic_summary(result: dict[str, Any]) -> str:
    m = result.get("metrics", {})
    facts = [{"item": k, "value": m.get(k)} for k in
             ("critic_id", "base_model", "n_train", "n_test", "steps", "resumed_from_step", "loss_first", "loss_last",
              "train_seconds") if k in m]
    return "\n\n".join([
        _header(result, "Critic training: held-out agreement with human labels"),
        "## Per dimension (test split) vs the majority-class baseline\n\n"
        + md_table(critic_metrics_rows(m), ["dimension", "n", "accuracy", "macro_f1", "spearman", "majority_label",
                                            "majority_accuracy", "majority_macro_f1"]),
        "## Run\n\n" + md_table(facts),
        f"Adapter: `{result['outputs'].get('adapter')}` · metrics: `{result['outputs'].get('metrics')}`",
    ]) + "\n"


def reward_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The score stage's reward distribution: one row per source and dimension."""
    cols = ("source", "dimension", "n", "mean", "std", "p05", "p50", "p95", "n_good", "n_normal", "n_bad")
    return [{c: r.get(c) for c in cols} for r in result.get("metrics", {}).get("reward_summary", [])]


def score_summary(result: dict[str, Any]) -> str:
    rows = reward_rows(result)
    return "\n\n".join([
        _header(result, "Scores: reward distribution per source and dimension"),
        md_table(rows, list(rows[0]) if rows else None),
        "## Counts\n\n" + md_table(counts_rows(result)),
        f"critic `{result.get('metrics', {}).get('critic_id')}` · scores `{result['outputs'].get('scores')}`",
        _quarantine_section(result),
    ]) + "\n"


def generate_summary(result: dict[str, Any], limit: int = 20) -> str:
    rows: list[dict[str, Any]] = []
    gen = result.get("outputs", {}).get("generated")
    if gen and storage.exists(gen):
        t = storage.read_table(gen)
        keep = [c for c in ("caption", "seed", "uri") if c in t.column_names]
        rows = t.select(keep).slice(0, limit).to_pylist()
    m = result.get("metrics", {})
    return "\n\n".join([
        _header(result, f"Generation ({m.get('tag', '')}, split {m.get('split', '')})"),
        "## Counts\n\n" + md_table(counts_rows(result)),
        f"## Videos (first {len(rows)})\n\n" + md_table(rows),
    ]) + "\n"


def align_summary(result: dict[str, Any]) -> str:
    m = result.get("metrics", {})
    facts = [{"item": k, "value": m.get(k)} for k in ("mode", "loss_first", "loss_last", "mean_weight") if k in m]
    outputs = [{"output": k, "uri": v} for k, v in sorted(result.get("outputs", {}).items())]
    return "\n\n".join([
        _header(result, "Alignment: reward-weighted fine-tuning"),
        md_table(facts), "## Counts\n\n" + md_table(counts_rows(result)), "## Outputs\n\n" + md_table(outputs),
        _quarantine_section(result),
    ]) + "\n"


def eval_rows(ev: dict[str, Any]) -> list[dict[str, Any]]:
    """eval.json as rows: base vs aligned per metric, with the aligned side's win rate."""
    base, aligned = ev.get("base", {}), ev.get("aligned", {})
    wins = ev.get("win_rate_by_dimension", {})
    rows = []
    for metric in sorted(set(base) | set(aligned), key=lambda k: (k != "reward", k)):
        win = ev.get("win_rate") if metric == "reward" else wins.get(metric)
        rows.append({"metric": metric, "base": base.get(metric), "aligned": aligned.get(metric),
                     "delta": (aligned.get(metric) - base.get(metric))
                     if isinstance(aligned.get(metric), (int, float)) and isinstance(base.get(metric), (int, float))
                     else None,
                     "win_rate": win})
    return rows


def embed_images(markdown: str, base_uri: str) -> str:
    """Inline every relative image of ``markdown`` as a base64 data URI (Prefect serves no files).

    Images that cannot be read stay as links, so a missing plot shows as missing, not as nothing.
    """
    def inline(m: re.Match) -> str:
        alt, src = m.group(1), m.group(2)
        if "://" in src or src.startswith(("data:", "/")):
            return m.group(0)
        uri = storage.join(base_uri, src)
        try:
            data = storage.read_bytes(uri)
        except OSError:
            return m.group(0)
        mime = "image/png" if src.lower().endswith(".png") else "image/svg+xml" if src.lower().endswith(".svg") \
            else "image/jpeg"
        return f"![{alt}](data:{mime};base64,{base64.b64encode(data).decode()})"

    return _IMAGE.sub(inline, markdown)


def evaluate_report(result: dict[str, Any]) -> str:
    """report.md with its plots embedded, so the artifact is the whole report."""
    out = result["outputs"]
    report_uri = out["report_md"]
    base = report_uri.rsplit("/", 1)[0]
    return embed_images(storage.read_text(report_uri), base)


BUILDERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "synth": lambda r: data_summary(r, "Synthetic LiFT-HRA data (labels known by construction)"),
    "ingest": lambda r: data_summary(r, "Ingest: manifest, prompts and rejected entries"),
    "decode": lambda r: data_summary(r, "Decode: frames and quarantined videos"),
    "train_critic": critic_summary,
    "generate": generate_summary,
    "score": score_summary,
    "align": align_summary,
}


def publish(result: dict[str, Any], label: str | None = None) -> None:
    """Create the stage's summary artifacts in the current task run (evaluate: a table and the report)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    stage = result["stage"]
    name = label or stage
    if stage == "evaluate":
        ev = result.get("metrics") or storage.read_json(result["outputs"]["eval_json"])
        create_table_artifact(table=eval_rows(ev), key=artifact_key(name, "summary"),
                              description=f"Evaluation (eval.json): base vs aligned on {ev.get('n_prompts')} "
                                          f"held-out prompts")
        create_markdown_artifact(markdown=evaluate_report(result), key=artifact_key(name, "report"),
                                 description="Evaluation report (report.md, plots embedded)")
        return
    if stage == "train_critic":
        create_table_artifact(table=critic_metrics_rows(result.get("metrics", {})), key=artifact_key(name, "metrics"),
                              description="Critic held-out agreement per dimension (metrics.json)")
    if stage == "score":
        create_table_artifact(table=reward_rows(result), key=artifact_key(name, "rewards"),
                              description="Reward distribution per source and dimension")
    create_markdown_artifact(markdown=BUILDERS[stage](result), key=artifact_key(name, "summary"),
                             description=f"{name} summary")
