"""Align stage: reward-weighted fine-tuning of the T2V denoiser on scored videos (LiFT's step 3).

1. ``build_dataset``: join ``scores.parquet`` with the manifests (videos come from the manifests'
   ``uri``), keep generated and real (``align.real_source``) videos, weight each by the critic's reward
   (``align.reward_column``; real videos times ``align.real_scale``; weight 1 with ``align.weighting:
   uniform``, the ablation) and drop rewards under ``align.min_reward``. Problems become quarantine rows.
2. ``fill_cache``: every video VAE-encoded once, every caption T5-encoded once (``lift_core.t2v.cache``).
3. ``RewardAlignRecipe`` runs in the one training loop (``lift_core.train``): LoRA (default) or full
   fine-tuning of the family's denoiser with LiFT's loss (``lift_core.t2v.loss``). A sample's latent,
   noise and timestep come from a generator seeded by its stream position, so a run resumes exactly
   under another world size. The loop owns Ray Train, checkpoints, resume, the schedule and clipping.
4. Outputs: a diffusers-format LoRA (``lora/``, loads with ``CogVideoXPipeline.load_lora_weights``) or
   the full denoiser (``weights/transformer``), and ``train_log.parquet`` (per step: loss, mean
   weight, learning rate, ...).
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.train import Callback, DataOrder, LoopSettings, TrainModel, WorkerContext, fit, latest_checkpoint
from lift_core.train.loop import log_schema, loss_trend, training_fingerprint
from lift_core.train.outputs import write_dir
from lift_core.train.trainable import adapter_state, full_state, load_adapter_state, load_full_state
from lift_core.progress import ProgressFn, resolve
from lift_core.schemas import QUARANTINE_SCHEMA, quarantine_row, rows_to_table
from lift_core.t2v.spec import get_spec

log = logging.getLogger("lift.t2v")

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
def _latest_scores(scores_uri: str, reward_column: str) -> dict[str, dict[str, Any]]:
    """video_id -> its newest score row (one critic normally; the newest wins when several scored it)."""
    if not storage.exists(scores_uri):
        raise FileNotFoundError(f"scores not found: {scores_uri}")
    cols = ["video_id", "source", "critic_id", "scored_at", "reward", "reward_lift"]
    t = storage.read_table(scores_uri)
    missing = set(cols) - set(t.column_names)
    if missing:
        raise ValueError(f"{scores_uri} is not a scores table: missing columns {sorted(missing)}")
    best: dict[str, dict[str, Any]] = {}
    for r in t.select(cols).to_pylist():
        prev = best.get(r["video_id"])
        if prev is None or (r["scored_at"] is not None and (prev["scored_at"] is None or r["scored_at"] > prev["scored_at"])):
            best[r["video_id"]] = r
    return best


def _manifest_index(manifest_uris: list[str]) -> dict[str, dict[str, Any]]:
    index: dict[str, dict[str, Any]] = {}
    for uri in manifest_uris:
        if not storage.exists(uri):
            raise FileNotFoundError(f"manifest not found: {uri}")
        t = storage.read_table(uri)
        missing = {"video_id", "uri", "caption", "source"} - set(t.column_names)
        if missing:
            raise ValueError(f"{uri} is not a manifest: missing columns {sorted(missing)}")
        for r in t.select(["video_id", "uri", "caption", "source"]).to_pylist():
            index.setdefault(r["video_id"], r)
    return index


def build_dataset(
    cfg: PipelineConfig, scores_uri: str, manifest_uris: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """Training samples (``SAMPLES_SCHEMA`` rows, sorted by video_id), quarantine rows and counts."""
    a = cfg.align
    scores = _latest_scores(scores_uri, a.reward_column)
    manifest = _manifest_index(manifest_uris)
    sources = {"generated"} | ({a.real_source} if a.use_real else set())
    samples, quarantine = [], []
    counts = {"scored": len(scores), "other_sources": 0, "below_min_reward": 0}
    for vid in sorted(scores):
        s = scores[vid]
        m = manifest.get(vid)
        if m is None:
            quarantine.append(quarantine_row(None, "align", "scored video is in none of the manifests", vid))
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


# --------------------------------------------------------------------------- the recipe
def train_step(spec: Any, pipe: Any, model: Any, params: list, optimizer: Any, batch: Any,
               grad_clip: float) -> tuple[Any, float]:
    """One plain optimizer step of LiFT's loss outside the loop (benchmarks and unit tests):
    (per-sample losses, gradient norm before clipping)."""
    import torch

    from lift_core.t2v.loss import per_sample_loss, reward_weighted_loss

    per_sample = per_sample_loss(spec, pipe, model, batch)
    optimizer.zero_grad(set_to_none=True)
    reward_weighted_loss(per_sample, batch.rewards).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip and grad_clip > 0 else torch.tensor(0.0)
    optimizer.step()
    return per_sample.detach(), float(grad_norm)


def add_trainable(spec: Any, inner: Any, mode: str, lora: Any) -> list:
    """Make the denoiser trainable: a LoRA adapter (base frozen) or every weight; returns the trainable params."""
    if mode == "lora":
        from peft import LoraConfig as PeftLoraConfig

        inner.requires_grad_(False)
        inner.add_adapter(
            PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                           init_lora_weights=True, target_modules=list(lora.target_modules))
        )
    elif mode == "full":
        inner.requires_grad_(True)
    else:
        raise ValueError(f"align.mode must be lora or full, got {mode!r}")
    inner.train()
    return [p for p in inner.parameters() if p.requires_grad]


class RewardAlignRecipe:
    """LiFT's reward-weighted likelihood on the family's denoiser, from cached latents and embeddings."""

    log_columns = [
        ("loss", pa.float64()),  # reward-weighted LiFT loss, mean over the global batch
        ("loss_unweighted", pa.float64()),  # the same without the reward weights
        ("mean_weight", pa.float64()),  # mean reward weight of the batch
    ]

    def build(self, ctx: WorkerContext) -> TrainModel:
        from lift_core.t2v.cache import TensorCache
        from lift_core.t2v.spec import get_spec

        cfg, a = ctx.cfg, ctx.cfg.align
        spec = get_spec(cfg.t2v.family)
        pipe = spec.load_pipeline(ctx.config["model"], cfg.t2v.dtype, "cpu", parts="denoiser")
        inner = spec.denoiser(pipe)
        params = add_trainable(spec, inner, a.mode, a.lora)
        lora = a.mode == "lora"
        return TrainModel(
            module=inner,
            param_groups=[{"params": params}],
            trainable_state=(lambda: adapter_state(inner)) if lora else (lambda: full_state(inner)),
            load_trainable_state=((lambda st: load_adapter_state(inner, st)) if lora
                                  else (lambda st: load_full_state(inner, st))),
            handles={"spec": spec, "pipe": pipe, "order": DataOrder(len(ctx.config["samples"]), ctx.settings.seed),
                     "latents": TensorCache(ctx.config["latents_uri"]), "texts": TensorCache(ctx.config["text_uri"])},
        )

    def make_batch(self, ctx: WorkerContext, model: TrainModel, positions: Sequence[int]) -> Any:
        import torch

        from lift_core.t2v.cache import caption_key
        from lift_core.t2v.loss import make_batch, sample_seed

        h, samples = model.handles, ctx.config["samples"]
        rows = [samples[h["order"](p)] for p in positions]
        dists = h["latents"].get_many([r["video_id"] for r in rows])
        embeds = h["texts"].get_many([caption_key(r["caption"]) for r in rows])
        return make_batch(
            h["spec"], h["pipe"], [dists[r["video_id"]] for r in rows], [embeds[caption_key(r["caption"])] for r in rows],
            [r["weight"] for r in rows], [sample_seed(ctx.settings.seed, p) for p in positions],
            device=ctx.device, dtype=getattr(torch, ctx.cfg.t2v.dtype),
        )

    def normalizer(self, batch: Any) -> float:
        return float(batch.rewards.shape[0])  # the mean is over samples

    def loss(self, ctx: WorkerContext, model: TrainModel, net: Any, batch: Any) -> tuple[Any, dict[str, Any]]:
        from lift_core.t2v.loss import per_sample_loss

        per_sample = per_sample_loss(model.handles["spec"], model.handles["pipe"], net, batch)
        weighted = (batch.rewards.to(per_sample.dtype) * per_sample).sum()
        return weighted, {"weighted": weighted, "unweighted": per_sample.sum(), "weight": batch.rewards.sum(),
                          "n": float(per_sample.shape[0])}

    def log_row(self, stats: dict[str, float]) -> dict[str, float]:
        n = stats["n"]
        return {"loss": stats["weighted"] / n, "loss_unweighted": stats["unweighted"] / n,
                "mean_weight": stats["weight"] / n}

    def finalize(self, ctx: WorkerContext, model: TrainModel, log_rows: list[dict[str, Any]]) -> None:
        spec, inner = model.handles["spec"], model.module
        if ctx.cfg.align.mode == "lora":
            write_dir(ctx.config["lora_uri"], lambda d: spec.save_lora(d, inner))
        else:
            write_dir(ctx.config["weights_uri"], lambda d: spec.save_denoiser(inner, os.path.join(d, "transformer")))


TRAIN_LOG_SCHEMA = log_schema(RewardAlignRecipe())


def stage_out(cfg: PipelineConfig, scores_uri: str, manifest_uris: list[str]) -> tuple[str, str]:
    """(key, output dir) of the stage for these inputs and this config."""
    upstream = [storage.fingerprint_uri(u) for u in [scores_uri, *manifest_uris]]
    key = storage.stage_key("align", upstream, align_fingerprint(cfg), {"t2v": cfg.t2v.fingerprint()})
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
    resume = latest_checkpoint(out)
    progress(0.1, f"training {a.train.max_steps} steps on {a.train.num_workers} worker(s)"
                  + (f", resuming from step {resume[0]}" if resume else ""))
    config = {
        "section": "align.train",
        "model": model,
        "samples": samples,
        "latents_uri": ns.latents_uri,
        "text_uri": ns.text_uri,
        "lora_uri": outputs.get("lora"),
        "weights_uri": outputs.get("weights"),
        "callbacks": list(callbacks),
    }
    run_name = a.train.run_name or f"lift-align-{key}-{uuid.uuid4().hex[:6]}"
    fit(RewardAlignRecipe(), cfg, settings, config, out, run_name, what="align")
    result = storage.read_json(storage.join(out, "train_result.json"))
    log_table = storage.read_table(outputs["train_log"])
    counts.update(cache.counts())
    counts.update({"samples": len(samples), "quarantined": len(quarantine), "steps": log_table.num_rows,
                   "resumed_from_step": int(result["resumed_from_step"])})
    metrics = {
        "mode": a.mode,
        "critic_ids": sorted({s["critic_id"] for s in samples if s["critic_id"]}),
        "mean_weight": float(np.mean([s["weight"] for s in samples])),
        **loss_trend(log_table.to_pylist()),
        "cache": {"latents": ns.latents_uri, "text": ns.text_uri},
    }
    progress(1.0, f"aligned: {log_table.num_rows} steps, loss {metrics['loss_first']:.4g} -> {metrics['loss_last']:.4g}")
    return storage.mark_success(storage.StageResult("align", key, out, outputs, counts, metrics))

