"""What a run found, read back from its stage outputs: the summary ``make demo`` prints and publishes.

``run_summary`` reads the ``_SUCCESS.json`` of each stage folder of one run (the critic's
``metrics.json`` figures and the evaluation's ``eval.json``) and returns a ``RunSummary``:

- the critic's held-out agreement per dimension next to the majority-class baseline;
- base vs aligned: the critic's reward (the signal that trained the aligned model) and, where the
  evaluation has it, the pixel oracle's caption adherence (a judge no critic trained), each with its
  win rate and 95% interval;
- where ``report.md`` and the plots are, and the Prefect UI links (the run, and the report artifact
  that embeds the plots, when the caller knows them).

``summary_markdown`` renders it for the flow's artifact and ``summary_text`` for the terminal. Both
render the same figures, so the UI and the terminal cannot disagree. The terminal lists every output
file; the artifact links the report artifact for the plots (a browser cannot open a worker's paths)
and names where the outputs are as plain paths, not as links. eval.json is read defensively: a
figure it lacks (an older run, a caption outside the synthetic world) is left out, not invented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from lift_core import storage
from lift_core.domain import DIMENSIONS
from lift_core.stages import critic_metrics_rows, md_table

AGREEMENT_COLUMNS = ["dimension", "n", "accuracy", "majority_accuracy", "gain", "macro_f1", "majority_macro_f1",
                     "majority_label"]
COMPARISON_COLUMNS = ["metric", "base", "aligned", "delta", "delta_ci", "win_rate", "win_rate_ci"]
ATTRIBUTE_COLUMNS = ["attribute", "base", "aligned", "delta"]


@dataclass
class RunSummary:
    """The figures of one run; a section the run did not produce stays empty and ``notes`` says why."""

    agreement: list[dict[str, Any]] = field(default_factory=list)
    comparison: list[dict[str, Any]] = field(default_factory=list)
    oracle_attributes: list[dict[str, Any]] = field(default_factory=list)
    n_prompts: int | None = None
    n_pairs: int | None = None
    files: list[dict[str, str]] = field(default_factory=list)  # {"what", "path"}
    ui_url: str | None = None
    report_url: str | None = None  # the UI page of the report artifact (report.md with its plots embedded)
    report_artifact: str | None = None  # that artifact's key
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading the outputs
def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _ci(v: Any) -> tuple[float, float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_num(x) is not None for x in v):
        return float(v[0]), float(v[1])
    return None


def _delta(base: float | None, aligned: float | None, given: Any = None) -> float | None:
    if _num(given) is not None:
        return float(given)
    return aligned - base if base is not None and aligned is not None else None


def comparison_row(metric: str, base: Any, aligned: Any, delta: Any = None, delta_ci: Any = None,
                   win_rate: Any = None, win_rate_ci: Any = None) -> dict[str, Any] | None:
    """One base-vs-aligned row, or None when eval.json has neither side of it."""
    b, a = _num(base), _num(aligned)
    if b is None and a is None:
        return None
    return {"metric": metric, "base": b, "aligned": a, "delta": _delta(b, a, delta), "delta_ci": _ci(delta_ci),
            "win_rate": _num(win_rate), "win_rate_ci": _ci(win_rate_ci)}


def agreement_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """metrics.json's held-out agreement per dimension, with the gain over the majority baseline."""
    rows = []
    for r in critic_metrics_rows(dict(metrics)):
        acc, base = _num(r.get("accuracy")), _num(r.get("majority_accuracy"))
        rows.append({**r, "gain": acc - base if acc is not None and base is not None else None})
    return rows


def comparison_rows(ev: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """eval.json as (base-vs-aligned rows, oracle rows per attribute)."""
    base, aligned = ev.get("base") or {}, ev.get("aligned") or {}
    if not isinstance(base, Mapping) or not isinstance(aligned, Mapping):
        base, aligned = {}, {}
    wins = ev.get("win_rate_by_dimension") if isinstance(ev.get("win_rate_by_dimension"), Mapping) else {}
    rows = [comparison_row("critic reward", base.get("reward"), aligned.get("reward"), ev.get("reward_delta"),
                           ev.get("reward_delta_ci"), ev.get("win_rate"), ev.get("win_rate_ci"))]
    rows += [comparison_row(f"critic reward: {d}", base.get(d), aligned.get(d), win_rate=wins.get(d))
             for d in DIMENSIONS]
    attributes: list[dict[str, Any]] = []
    oracle = ev.get("oracle")
    if isinstance(oracle, Mapping):
        rows.append(comparison_row("oracle adherence", oracle.get("base"), oracle.get("aligned"), oracle.get("delta"),
                                   oracle.get("delta_ci"), oracle.get("win_rate"), oracle.get("win_rate_ci")))
        by_attr = oracle.get("by_attribute")
        for name, v in (by_attr.items() if isinstance(by_attr, Mapping) else ()):
            if isinstance(v, Mapping) and (r := comparison_row(name, v.get("base"), v.get("aligned"))):
                attributes.append({"attribute": name, "base": r["base"], "aligned": r["aligned"], "delta": r["delta"]})
    rows.append(comparison_row("temporal flickering (VBench, higher is steadier)", base.get("flicker"), aligned.get("flicker")))
    return [r for r in rows if r is not None], attributes


def _plot_paths(plots_uri: str | None) -> list[str]:
    if not plots_uri or not storage.exists(plots_uri):
        return []
    fs, path = storage.fs_and_path(plots_uri)
    return sorted(storage.to_uri(fs, p) for p in fs.ls(path, detail=False) if p.lower().endswith((".png", ".svg")))


def _display(uri: str) -> str:
    return storage.local_path(uri) or uri


def run_summary(stage_dirs: Mapping[str, str] | Sequence[str], ui_url: str | None = None,
                report_url: str | None = None, report_artifact: str | None = None) -> RunSummary:
    """The summary of one run from its stage output folders (``{label: folder}`` or a list of folders).

    The critic's figures come from the ``train_critic`` folder, base vs aligned from ``evaluate``; a
    stage that did not finish (no ``_SUCCESS.json``) leaves its section empty with a note. ``ui_url``
    (the run's page), ``report_url`` and ``report_artifact`` (the report artifact's page and key) come
    from the orchestrator, which lift_core does not know.
    """
    folders = list(stage_dirs.values()) if isinstance(stage_dirs, Mapping) else list(stage_dirs)
    found: dict[str, dict[str, Any]] = {}
    for folder in folders:
        record = storage.read_success(folder)
        if record and record.get("stage") in ("train_critic", "evaluate"):
            found[record["stage"]] = record
    out = RunSummary(ui_url=ui_url, report_url=report_url, report_artifact=report_artifact)

    critic = found.get("train_critic")
    if critic is None:
        out.notes.append("no finished train_critic stage in this run: no critic agreement to show")
    else:
        metrics = critic.get("metrics") or {}
        if not metrics and critic.get("outputs", {}).get("metrics"):
            metrics = storage.read_json(critic["outputs"]["metrics"])
        out.agreement = agreement_rows(metrics)
        for what in ("metrics", "adapter"):
            if uri := critic.get("outputs", {}).get(what):
                out.files.append({"what": f"critic {what}", "path": _display(uri)})

    ev_record = found.get("evaluate")
    if ev_record is None:
        out.notes.append("no finished evaluate stage in this run: no base vs aligned figures")
        return out
    outputs = ev_record.get("outputs", {})
    ev = ev_record.get("metrics") or (storage.read_json(outputs["eval_json"]) if outputs.get("eval_json") else {})
    out.comparison, out.oracle_attributes = comparison_rows(ev)
    out.n_prompts, out.n_pairs = ev.get("n_prompts"), ev.get("n_pairs")
    if not isinstance(ev.get("oracle"), Mapping):
        out.notes.append("eval.json has no pixel-oracle figures (a caption outside the synthetic world, or an "
                         "older evaluation): base vs aligned is judged by the critic only")
    for what, key in (("report", "report_md"), ("eval.json", "eval_json"), ("eval table", "eval_parquet")):
        if uri := outputs.get(key):
            out.files.append({"what": what, "path": _display(uri)})
    out.files += [{"what": "plot", "path": _display(p)} for p in _plot_paths(outputs.get("plots"))]
    return out


# --------------------------------------------------------------------------- rendering
SIGNED = {"delta", "delta_ci", "gain"}  # changes: shown with their sign


def _cell(v: Any, signed: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, tuple):
        return f"[{_cell(v[0], signed)}, {_cell(v[1], signed)}]"
    if isinstance(v, float):
        return f"{v:+.4f}" if signed else f"{v:.4f}"
    return str(v)


def _cells(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, str]]:
    return [{c: _cell(r.get(c), c in SIGNED) for c in columns} for r in rows]


def text_table(rows: list[dict[str, Any]], columns: list[str], indent: str = "  ") -> str:
    """Rows as aligned plain-text columns (the terminal's version of ``md_table``)."""
    cells = _cells(rows, columns)
    width = {c: max([len(c), *(len(r[c]) for r in cells)]) for c in columns}
    line = lambda r: indent + "  ".join(r[c].ljust(width[c]) for c in columns).rstrip()  # noqa: E731
    return "\n".join([line({c: c for c in columns}), line({c: "-" * width[c] for c in columns}), *map(line, cells)])


def _sections(s: RunSummary) -> list[tuple[str, str, list[dict[str, Any]], list[str]]]:
    """(title, caption, rows, columns) of every section, in order: what both renderings show."""
    pairs = f"{s.n_pairs} paired videos over {s.n_prompts} held-out prompts" if s.n_pairs else "held-out prompts"
    return [
        ("Critic agreement with held-out human labels",
         "per dimension, against always answering the training split's majority label (gain = accuracy - "
         "majority_accuracy)", s.agreement, AGREEMENT_COLUMNS),
        ("Base vs aligned",
         f"{pairs}; win rate = share of pairs where the aligned video scores higher (ties half), 95% intervals "
         "from a bootstrap over prompts. The critic trained the aligned model; the pixel oracle did not.",
         s.comparison, COMPARISON_COLUMNS),
        ("Pixel oracle per attribute", "caption adherence read from the pixels", s.oracle_attributes,
         ATTRIBUTE_COLUMNS),
        ("Files", "", s.files, ["what", "path"]),
    ]


def where_rows(files: list[dict[str, str]]) -> list[dict[str, str]]:
    """The output files as Markdown rows of plain paths (code, not links): one row for the plots' folder."""
    plots = [f["path"] for f in files if f["what"] == "plot"]
    rows = [{"what": f["what"], "path": f"`{f['path']}`"} for f in files if f["what"] != "plot"]
    if plots:
        folder = plots[0].rsplit("/", 1)[0] + "/"
        rows.append({"what": f"plots ({len(plots)} files)", "path": f"`{folder}`"})
    return rows


def summary_markdown(s: RunSummary) -> str:
    """The Markdown of the flow's results artifact: the figures, the report artifact's link for the plots,
    and where the outputs are (plain paths: a browser cannot open a worker's files)."""
    parts = ["# LiFT run: results"]
    for title, caption, rows, columns in _sections(s):
        if rows and title != "Files":
            parts.append(f"## {title}\n\n" + (f"{caption}\n\n" if caption else "") + md_table(_cells(rows, columns), columns))
    if s.report_url or s.report_artifact:
        name = f"`{s.report_artifact}`" if s.report_artifact else "report"
        target = f"[the {name} artifact]({s.report_url})" if s.report_url else f"the {name} artifact of this run"
        parts.append(f"## Report and plots\n\nThe evaluation report, with its plots embedded: {target}.")
    if s.files:
        parts.append("## Where the outputs are\n\nOn the storage the run wrote to (the worker's disk or the "
                     "bucket): paths, not links.\n\n" + md_table(where_rows(s.files), ["what", "path"]))
    if s.ui_url:
        parts.append(f"Prefect UI: [{s.ui_url}]({s.ui_url})")
    parts += [f"_{n}_" for n in s.notes]
    return "\n\n".join(parts) + "\n"


def summary_text(s: RunSummary) -> str:
    parts = ["LiFT run: results", "================="]
    for title, caption, rows, columns in _sections(s):
        if rows:
            parts += ["", title, *([f"  {caption}"] if caption else []), text_table(rows, columns)]
    if s.ui_url:
        parts += ["", f"Prefect UI: {s.ui_url}"]
    if s.report_url:
        parts += [f"Report with its plots (UI): {s.report_url}"]
    parts += [f"note: {n}" for n in s.notes]
    return "\n".join(parts) + "\n"


__all__ = ["RunSummary", "run_summary", "summary_markdown", "summary_text", "text_table", "where_rows"]
