"""The stage registry: every stage of the LiFT DAG, declared once.

A ``Stage`` says what runs (``run``), where it writes (``stage_out``: the key and folder
``<run_root>/<stage>/<key>/`` of its output), the GPUs it holds at its peak (``gpus``) and the summary
it leaves in the UI (``summary``). The key is the only cache key: a stage finds its ``_SUCCESS.json``
under it, and ``tasks/`` gives it to Prefect's task cache, so the two cannot disagree. ``tasks/``
builds the Prefect task of any stage from its declaration; ``lift-full`` and the ``lift`` CLI call the
same ``run``.

Stage modules pull in torch, Ray and transformers: they are imported when a stage runs or is keyed,
not when the registry is read.
"""

from __future__ import annotations

import base64
import importlib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.domain import DIMENSIONS
from lift_core.progress import ProgressFn

StageDict = dict[str, Any]  # a StageResult as a dict (what tasks pass around)


@dataclass(frozen=True)
class Lazy:
    """The function ``module:name``, imported at its first call."""

    path: str

    def resolve(self) -> Callable[..., Any]:
        module, name = self.path.split(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


@dataclass(frozen=True)
class Artifact:
    """One piece of a stage's summary, published as ``<task label>-<name>``: Markdown or a table."""

    name: str
    description: str
    markdown: str | None = None
    table: list[dict[str, Any]] | None = None


def no_gpus(cfg: PipelineConfig) -> int:  # noqa: ARG001 - the gpus signature
    return 0


@dataclass(frozen=True)
class Stage:
    """One stage of the DAG. ``inputs`` are the keyword arguments of its run function besides ``cfg``."""

    name: str
    run: Callable[..., storage.StageResult]  # run(cfg, **inputs, progress=None)
    stage_out: Callable[..., tuple[str, str]]  # stage_out(cfg, **inputs) -> (key, output folder) that run uses
    summary: Callable[[StageDict], list[Artifact]]
    gpus: Callable[[PipelineConfig], int] = no_gpus

    def __call__(self, cfg: PipelineConfig, progress: ProgressFn | None = None, **inputs: Any) -> storage.StageResult:
        return self.run(cfg, **inputs, progress=progress)


# --------------------------------------------------------------------------- GPUs
def actor_pool_gpus(actors: int, per_actor: float) -> int:
    """Devices a Ray actor pool occupies: fractional actors share, so 3 actors at 0.5 GPU hold 2."""
    return math.ceil(max(1, actors) * per_actor) if per_actor > 0 else 0


def trainer_gpus(train: Any) -> int:
    """Devices a Ray Train run holds: one per worker on GPU."""
    return max(1, train.num_workers) if train.use_gpu else 0


def generate_gpus(cfg: PipelineConfig) -> int:
    return actor_pool_gpus(cfg.generate.num_actors, cfg.generate.num_gpus_per_actor)


def score_gpus(cfg: PipelineConfig) -> int:
    return actor_pool_gpus(cfg.score.num_actors, cfg.score.num_gpus_per_actor)


def align_gpus(cfg: PipelineConfig) -> int:
    """Latent caching and training run one after the other: the larger of the two."""
    a = cfg.align
    return max(trainer_gpus(a.train), actor_pool_gpus(a.cache_num_actors, a.cache_num_gpus_per_actor))


def evaluate_gpus(cfg: PipelineConfig) -> int:
    """Evaluation generates with the generation actors, then scores with the scoring ones."""
    return max(generate_gpus(cfg), score_gpus(cfg))


# --------------------------------------------------------------------------- summaries
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


def counts_rows(result: StageDict) -> list[dict[str, Any]]:
    return [{"count": k, "value": v} for k, v in sorted(result.get("counts", {}).items())]


def quarantine_rows(uri: str | None, limit: int = MAX_QUARANTINE_ROWS) -> tuple[int, list[dict[str, Any]]]:
    """(total, first ``limit`` rows) of a quarantine table; (0, []) when there is none."""
    if not uri or not storage.exists(uri):
        return 0, []
    t = storage.read_table(uri, columns=["uri", "video_id", "stage", "error"])
    return t.num_rows, t.slice(0, limit).to_pylist()


def _header(result: StageDict, title: str) -> str:
    return f"# {title}\n\nStage key `{result['key']}` · output `{result['out_uri']}`\n"


def _quarantine_section(result: StageDict) -> str:
    total, rows = quarantine_rows(result.get("outputs", {}).get("quarantine"))
    head = f"## Quarantine: {total} input(s)\n\n"
    if not total:
        return head + "Every input was usable.\n"
    more = f"\n\n(first {len(rows)} of {total}; all in `{result['outputs']['quarantine']}`)" if total > len(rows) else ""
    return head + md_table(rows, ["uri", "video_id", "error"]) + more + "\n"


def _summary(markdown: str) -> Artifact:
    return Artifact("summary", "summary", markdown=markdown)


def data_summary(result: StageDict, title: str) -> str:
    """synth, ingest, decode: counts, outputs and the quarantined inputs with their reasons."""
    outputs = [{"output": k, "uri": v} for k, v in sorted(result.get("outputs", {}).items())]
    parts = [_header(result, title), "## Counts\n\n" + md_table(counts_rows(result)),
             "## Outputs\n\n" + md_table(outputs)]
    if "quarantine" in result.get("outputs", {}):
        parts.append(_quarantine_section(result))
    return "\n\n".join(parts) + "\n"


def data_artifacts(title: str) -> Callable[[StageDict], list[Artifact]]:
    return lambda result: [_summary(data_summary(result, title))]


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


def critic_summary(result: StageDict) -> str:
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


def critic_artifacts(result: StageDict) -> list[Artifact]:
    return [Artifact("metrics", "critic held-out agreement per dimension (metrics.json)",
                     table=critic_metrics_rows(result.get("metrics", {}))),
            _summary(critic_summary(result))]


def generate_summary(result: StageDict, limit: int = 20) -> str:
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


def reward_rows(result: StageDict) -> list[dict[str, Any]]:
    """The score stage's reward distribution: one row per source and dimension."""
    cols = ("source", "dimension", "n", "mean", "std", "p05", "p50", "p95", "n_good", "n_normal", "n_bad")
    return [{c: r.get(c) for c in cols} for r in result.get("metrics", {}).get("reward_summary", [])]


def score_summary(result: StageDict) -> str:
    rows = reward_rows(result)
    return "\n\n".join([
        _header(result, "Scores: reward distribution per source and dimension"),
        md_table(rows, list(rows[0]) if rows else None),
        "## Counts\n\n" + md_table(counts_rows(result)),
        f"critic `{result.get('metrics', {}).get('critic_id')}` · scores `{result['outputs'].get('scores')}`",
        _quarantine_section(result),
    ]) + "\n"


def score_artifacts(result: StageDict) -> list[Artifact]:
    return [Artifact("rewards", "reward distribution per source and dimension", table=reward_rows(result)),
            _summary(score_summary(result))]


def align_summary(result: StageDict) -> str:
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
        b, a = base.get(metric), aligned.get(metric)
        numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
        rows.append({"metric": metric, "base": b, "aligned": a, "delta": a - b if numbers else None,
                     "win_rate": ev.get("win_rate") if metric == "reward" else wins.get(metric)})
    return rows


def embed_images(markdown: str, base_uri: str) -> str:
    """Inline every relative image of ``markdown`` as a base64 data URI (Prefect serves no files).

    Images that cannot be read stay as links, so a missing plot shows as missing, not as nothing.
    """
    def inline(m: re.Match) -> str:
        alt, src = m.group(1), m.group(2)
        if "://" in src or src.startswith(("data:", "/")):
            return m.group(0)
        try:
            data = storage.read_bytes(storage.join(base_uri, src))
        except OSError:
            return m.group(0)
        lower = src.lower()
        mime = "image/png" if lower.endswith(".png") else "image/svg+xml" if lower.endswith(".svg") else "image/jpeg"
        return f"![{alt}](data:{mime};base64,{base64.b64encode(data).decode()})"

    return _IMAGE.sub(inline, markdown)


def evaluate_report(result: StageDict) -> str:
    """report.md with its plots embedded, so the artifact is the whole report."""
    report_uri = result["outputs"]["report_md"]
    return embed_images(storage.read_text(report_uri), report_uri.rsplit("/", 1)[0])


def evaluate_artifacts(result: StageDict) -> list[Artifact]:
    ev = result.get("metrics") or storage.read_json(result["outputs"]["eval_json"])
    return [Artifact("summary", f"evaluation (eval.json): base vs aligned on {ev.get('n_prompts')} held-out prompts",
                     table=eval_rows(ev)),
            Artifact("report", "evaluation report (report.md, plots embedded)", markdown=evaluate_report(result))]


# --------------------------------------------------------------------------- the registry
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("synth",
          run=Lazy("lift_core.video.synth:run_synth"),
          stage_out=Lazy("lift_core.video.synth:stage_out"),
          summary=data_artifacts("Synthetic LiFT-HRA data (labels known by construction)")),
    Stage("ingest",
          run=Lazy("lift_core.data.ingest:run_ingest"),
          stage_out=Lazy("lift_core.data.ingest:stage_out"),
          summary=data_artifacts("Ingest: manifest, prompts and rejected entries")),
    # Decodes the rated and real videos, and again the generated ones.
    Stage("decode",
          run=Lazy("lift_core.video.decode_stage:run_decode"),
          stage_out=Lazy("lift_core.video.decode_stage:stage_out"),
          summary=data_artifacts("Decode: frames and quarantined videos")),
    Stage("train_critic",
          run=Lazy("lift_core.critic.train_stage:run_train_critic"),
          stage_out=Lazy("lift_core.critic.train_stage:stage_out"),
          summary=critic_artifacts,
          gpus=lambda cfg: trainer_gpus(cfg.critic.train)),
    Stage("generate",
          run=Lazy("lift_core.t2v.generate:run_generate"),
          stage_out=Lazy("lift_core.t2v.generate:generate_stage_dir"),
          summary=lambda result: [_summary(generate_summary(result))],
          gpus=generate_gpus),
    Stage("score",
          run=Lazy("lift_core.critic.score_stage:run_score"),
          stage_out=Lazy("lift_core.critic.score_stage:stage_out"),
          summary=score_artifacts,
          gpus=score_gpus),
    Stage("align",
          run=Lazy("lift_core.t2v.align_stage:run_align"),
          stage_out=Lazy("lift_core.t2v.align_stage:stage_out"),
          summary=lambda result: [_summary(align_summary(result))],
          gpus=align_gpus),
    Stage("evaluate",
          run=Lazy("lift_core.t2v.evaluate:run_evaluate"),
          stage_out=Lazy("lift_core.t2v.evaluate:stage_out"),
          summary=evaluate_artifacts,
          gpus=evaluate_gpus),
)}


def get_stage(name: str) -> Stage:
    """The declared stage ``name``; an unknown name fails with the list of known ones."""
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; the stages are {list(STAGES)}") from None


__all__ = ["Artifact", "STAGES", "Stage", "get_stage"]
