"""The ``align`` stage: reward-weighted (or DPO) fine-tuning of the T2V denoiser on scored videos.

1. ``build_dataset``: join ``scores.parquet`` with the manifests (videos come from the manifests'
   ``uri``), keep generated and real (``align.real_source``) videos, weight each by the critic's reward
   (``align.reward_column``; real videos times ``align.real_scale``; weight 1 with ``align.weighting:
   uniform``, the ablation) and drop rewards under ``align.min_reward``. Problems become quarantine rows.
   With ``align.reward_source: file``, the rewards of ``align.reward_file`` (LiFT's alignment JSON
   ``score``, LiFT's critic outputs, or ``lift import-scores`` rows) replace the critic's where present.
2. ``fill_cache``: every video VAE-encoded once, every caption T5-encoded once (``lift_core.t2v.cache``).
3. The recipe of ``align.objective`` (``RewardAlignRecipe`` or ``DiffusionDpoRecipe``) in the one
   training loop, resumable under any world size.
4. Outputs: a diffusers-format LoRA (``lora/``) or the full denoiser (``weights/transformer``),
   ``train_log``, ``samples`` and ``quarantine``.
"""

from __future__ import annotations

import uuid
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.data.manifest import read_manifest
from lift_core.model_identity import t2v_base_fingerprint
from lift_core.progress import ProgressFn, resolve
from lift_core.schemas import QUARANTINE_SCHEMA, caption_id, quarantine_row, rows_to_table, with_caption_id
from lift_core.t2v.align import RewardAlignRecipe
from lift_core.t2v.spec import get_spec
from lift_core.train import Callback, LoopSettings, fit, latest_checkpoint, resume_message
from lift_core.train.loop import loss_trend, training_fingerprint

SAMPLES_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("caption", pa.string()),
        ("source", pa.string()),
        ("critic_id", pa.string()),
        ("reward", pa.float64()),
        ("weight", pa.float64()),
    ]
)
# Align fields that decide how a run executes, not what it computes (left out of the stage key), so a
# rerun with another cache location finds and resumes the same run.
EXECUTION_FIELDS = {
    "cpus_per_worker", "max_failures", "keep_checkpoints", "cache_root", "cache_batch_size",
    "cache_num_actors", "cache_num_gpus_per_actor", "cache_num_cpus_per_actor",
}


def align_fingerprint(cfg: PipelineConfig) -> str:
    return training_fingerprint(cfg.align, EXECUTION_FIELDS, "align")


# --------------------------------------------------------------------------- dataset
def _latest_scores(scores_uri: str, reward_column: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(video_id, caption_id) -> its newest score row (one critic normally; the newest wins when several
    scored it). A score belongs to a video and a caption: every critic prompt holds the caption."""
    if not storage.exists(scores_uri):
        raise FileNotFoundError(f"scores not found: {scores_uri}")
    cols = ["video_id", "caption", "source", "critic_id", "scored_at", "reward", "reward_lift"]
    t = storage.read_table(scores_uri)
    missing = set(cols) - set(t.column_names)
    if missing:
        raise ValueError(f"{scores_uri} is not a scores table: missing columns {sorted(missing)}")
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in with_caption_id(t).select([*cols, "caption_id"]).to_pylist():  # older scores: id from the caption
        key = (r["video_id"], r["caption_id"])
        prev = best.get(key)
        if prev is None or (r["scored_at"] is not None and (prev["scored_at"] is None or r["scored_at"] > prev["scored_at"])):
            best[key] = r
    return best


def _manifest_index(manifest_uris: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(video_id, caption_id) -> the manifests' first row of that video and caption."""
    index: dict[tuple[str, str], dict[str, Any]] = {}
    for uri in manifest_uris:
        if not storage.exists(uri):
            raise FileNotFoundError(f"manifest not found: {uri}")
        t = read_manifest(uri)  # relative URIs resolve against the manifest, never the working directory
        missing = {"video_id", "uri", "caption", "source"} - set(t.column_names)
        if missing:
            raise ValueError(f"{uri} is not a manifest: missing columns {sorted(missing)}")
        for r in t.select(["video_id", "uri", "caption", "source"]).to_pylist():
            index.setdefault((r["video_id"], caption_id(r["caption"])), r)
    return index


def build_dataset(
    cfg: PipelineConfig, scores_uri: str, manifest_uris: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """Training samples (``SAMPLES_SCHEMA`` rows, sorted by video_id), quarantine rows and counts."""
    a = cfg.align
    scores = _latest_scores(scores_uri, a.reward_column)
    if a.reward_source == "file":  # the file's reward wins where it has the (video, caption)
        from lift_core.critic.import_scores import file_score_rows

        scores.update({(r["video_id"], caption_id(r["caption"])): r
                       for r in file_score_rows(a.reward_file, cfg.critic, cfg.score)})
    manifest = _manifest_index(manifest_uris)
    sources = {"generated"} | ({a.real_source} if a.use_real else set())
    samples, quarantine = [], []
    counts = {"scored": len(scores), "other_sources": 0, "below_min_reward": 0}
    for key in sorted(scores):
        s, vid = scores[key], key[0]
        m = manifest.get(key)
        if m is None:
            quarantine.append(quarantine_row(None, "align", "scored (video, caption) is in none of the manifests", vid))
            continue
        if m["source"] not in sources:
            counts["other_sources"] += 1
            continue
        reward = s[a.reward_column]
        if reward is None or not np.isfinite(reward):
            quarantine.append(quarantine_row(m["uri"], "align", f"no finite {a.reward_column} in the scores", vid))
            continue
        if not m["caption"]:
            quarantine.append(quarantine_row(m["uri"], "align", "video has no caption", vid))
            continue
        if reward < a.min_reward:
            counts["below_min_reward"] += 1
            continue
        scale = a.real_scale if m["source"] == a.real_source else 1.0
        weight = (float(reward) if a.weighting == "reward" else 1.0) * scale
        samples.append({**{k: m[k] for k in ("video_id", "uri", "caption", "source")},
                        "critic_id": s["critic_id"], "reward": float(reward), "weight": weight})
    for src in sorted(sources):
        counts[f"samples_{src}"] = sum(1 for x in samples if x["source"] == src)
    return samples, quarantine, counts


def objective_recipe(cfg: PipelineConfig, samples: list[dict[str, Any]],
                     counts: dict[str, int]) -> tuple[Any, dict[str, Any]]:
    """The recipe of ``align.objective`` and what it adds to the loop config (DPO: its pairs, counted)."""
    if cfg.align.objective == "lift":
        return RewardAlignRecipe(), {}
    from lift_core.t2v.dpo import DiffusionDpoRecipe, preference_pairs

    pairs, pair_counts = preference_pairs(samples, cfg.align.dpo.min_gap)
    counts.update(pair_counts)
    if not pairs:
        raise ValueError(f"align.objective=dpo: no preference pairs ({pair_counts}); generate more videos per "
                         f"prompt (generate.videos_per_prompt) or lower align.dpo.min_gap")
    return DiffusionDpoRecipe(), {"pairs": pairs}


def stage_out(cfg: PipelineConfig, scores_uri: str, manifest_uris: list[str]) -> tuple[str, str]:
    """(key, output dir) of the stage for these inputs and this config."""
    files = [cfg.align.reward_file] if cfg.align.reward_source == "file" and cfg.align.reward_file else []
    upstream = [storage.fingerprint_uri(u) for u in [scores_uri, *manifest_uris, *files]]
    key = storage.stage_key("align", upstream, align_fingerprint(cfg),
                            {"t2v": cfg.t2v.fingerprint(), "base": t2v_base_fingerprint(cfg)})
    return key, storage.abspath_if_local(storage.stage_dir(cfg.run_root, "align", key))


def run_align(
    cfg: PipelineConfig,
    scores_uri: str,
    manifest_uris: list[str],
    progress: ProgressFn | None = None,
    callbacks: Sequence[Callback] = (),
) -> storage.StageResult:
    """The ``align`` stage: outputs ``lora`` (or ``weights``), ``train_log``, ``samples``, ``quarantine``.
    ``callbacks`` run inside the training loop on every worker (they must pickle)."""
    from lift_core.t2v.builder import ensure_t2v_base
    from lift_core.t2v.cache import fill_cache, namespaces

    progress = resolve(progress)
    get_spec(cfg.t2v.family).check_shape(cfg.t2v.height, cfg.t2v.width, cfg.t2v.num_frames)
    a = cfg.align
    if a.mode == "lora" and not a.lora.target_modules:
        raise ValueError("align.lora.target_modules is empty")
    settings = LoopSettings.for_stage(cfg.align)
    settings.micro_batch(settings.num_workers, "align.train")  # fail before any work on an uneven split
    key, out = stage_out(cfg, scores_uri, manifest_uris)
    if done := storage.load_success(out):
        return done
    model = ensure_t2v_base(cfg)
    samples, quarantine, counts = build_dataset(cfg, scores_uri, manifest_uris)
    progress(0.02, f"{len(samples)} training samples ({counts})")

    ns = namespaces(cfg, model)
    cache = fill_cache(cfg, model, ns, [(s["video_id"], s["uri"]) for s in samples], [s["caption"] for s in samples],
                       batch_size=a.cache_batch_size, progress=lambda f, m: progress(0.02 + 0.08 * f, m))
    failed = {f["key"]: f for f in cache.failed}
    quarantine += [quarantine_row(f["uri"], "align", f["error"], f["key"]) for f in cache.failed]
    samples = [s for s in samples if s["video_id"] not in failed]
    if not samples:
        raise ValueError(f"no usable training samples (counts: {counts}, quarantined: {len(quarantine)})")

    outputs = {
        ("lora" if a.mode == "lora" else "weights"): storage.join(out, "lora" if a.mode == "lora" else "weights"),
        "train_log": storage.join(out, "train_log.parquet"),
        "samples": storage.join(out, "samples.parquet"),
        "quarantine": storage.join(out, "quarantine.parquet"),
    }
    storage.write_table(outputs["samples"], pa.Table.from_pylist(samples, schema=SAMPLES_SCHEMA))
    storage.write_table(outputs["quarantine"], rows_to_table(quarantine, QUARANTINE_SCHEMA))
    recipe, extra = objective_recipe(cfg, samples, counts)
    progress(0.1, f"training {a.train.max_steps} steps on {a.train.num_workers} worker(s), {resume_message(out)}")
    config = {
        "section": "align.train",
        "model": model,
        "samples": samples,
        "latents_uri": ns.latents_uri,
        "text_uri": ns.text_uri,
        "lora_uri": outputs.get("lora"),
        "weights_uri": outputs.get("weights"),
        "callbacks": list(callbacks),
        **extra,
    }
    run_name = a.train.run_name or f"lift-align-{key}-{uuid.uuid4().hex[:6]}"
    fit(recipe, cfg, settings, config, out, run_name, what="align", progress=lambda f, m: progress(0.1 + 0.9 * f, m))
    result = storage.read_json(storage.join(out, "train_result.json"))
    log_table = storage.read_table(outputs["train_log"])
    counts.update(cache.counts())
    counts.update({"samples": len(samples), "quarantined": len(quarantine), "steps": log_table.num_rows,
                   "resumed_from_step": int(result["resumed_from_step"])})
    metrics = {
        "mode": a.mode,
        "objective": a.objective,
        "critic_ids": sorted({s["critic_id"] for s in samples if s["critic_id"]}),
        "mean_weight": float(np.mean([s["weight"] for s in samples])),
        **loss_trend(log_table.to_pylist()),
        "cache": {"latents": ns.latents_uri, "text": ns.text_uri},
    }
    progress(1.0, f"aligned: {log_table.num_rows} steps, loss {metrics['loss_first']:.4g} -> {metrics['loss_last']:.4g}")
    return storage.mark_success(storage.StageResult("align", key, out, outputs, counts, metrics))

