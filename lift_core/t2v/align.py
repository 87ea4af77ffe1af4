"""Align stage: reward-weighted fine-tuning of the T2V denoiser on scored videos (LiFT's step 3).

1. ``build_dataset``: join ``scores.parquet`` with the manifests (videos come from the manifests'
   ``uri``), keep generated and real (``align.real_source``) videos, weight each by the critic's reward
   (``align.reward_column``; real videos times ``align.real_scale``) and drop rewards under
   ``align.min_reward``. Problems become quarantine rows.
2. ``fill_cache``: every video VAE-encoded once, every caption T5-encoded once (``lift_core.t2v.cache``).
3. Ray Train ``TorchTrainer`` (DDP; gloo on CPU) runs ``train_loop`` on every worker: LoRA (default) or
   full fine-tuning with LiFT's loss (``lift_core.t2v.loss``), AdamW, warmup, gradient clipping.
   ``align.train.batch_size`` is the global batch, split evenly over the workers; sample order and
   per-sample randomness depend only on the sample's position in the data stream, so a run resumes
   correctly under another world size.
4. Checkpoints (``checkpoints/step-N/``: trainable weights, optimizer, LR scheduler, data position and
   the log rows so far; ``state.json`` is written last and marks a complete checkpoint). A rerun of
   a crashed stage resumes from the newest complete checkpoint.
5. Outputs: a diffusers-format LoRA (``lora/``, loads with ``CogVideoXPipeline.load_lora_weights``) or
   the full denoiser (``weights/transformer``), and ``train_log.parquet`` (per step: loss, mean
   weight, learning rate, ...).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa

from lift_core import storage
from lift_core.distributed import checkpoints
from lift_core.distributed.checkpoints import DataOrder, latest_checkpoint, torch_load, write_dir
from lift_core.config import PipelineConfig
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
TRAIN_LOG_SCHEMA = pa.schema(
    [
        ("step", pa.int64()),
        ("loss", pa.float64()),  # reward-weighted LiFT loss, mean over the global batch
        ("loss_unweighted", pa.float64()),  # the same without the reward weights
        ("mean_weight", pa.float64()),  # mean reward weight of the batch
        ("lr", pa.float64()),
        ("grad_norm", pa.float64()),  # before clipping
        ("samples_seen", pa.int64()),
        ("world_size", pa.int32()),
        ("step_time_s", pa.float64()),
    ]
)
# Config fields that decide how a run executes, not what it computes: left out of the stage key, so a
# rerun with another world size (or cache location) finds and resumes the same run.
EXECUTION_FIELDS = {
    "cpus_per_worker", "max_failures", "keep_checkpoints", "cache_root", "cache_batch_size",
    "cache_num_actors", "cache_num_gpus_per_actor", "cache_num_cpus_per_actor",
}
EXECUTION_TRAIN_FIELDS = {"num_workers", "use_gpu", "run_name", "checkpoint_every"}
CRASH_ENV = "LIFT_ALIGN_CRASH_AT_STEP"  # fault injection for resume tests: one worker dies before that step


def align_fingerprint(cfg: PipelineConfig) -> str:
    d = cfg.align.model_dump(mode="json")
    for k in EXECUTION_FIELDS:
        d.pop(k, None)
    for k in EXECUTION_TRAIN_FIELDS:
        d["train"].pop(k, None)
    return storage.hash_parts("align", d)


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
        samples.append({**{k: m[k] for k in ("video_id", "uri", "caption", "source")},
                        "critic_id": s["critic_id"], "reward": float(reward), "weight": float(reward) * scale})
    for src in sorted(sources):
        counts[f"samples_{src}"] = sum(1 for x in samples if x["source"] == src)
    return samples, quarantine, counts


# --------------------------------------------------------------------------- checkpoints
def trainable_state(inner: Any, mode: str) -> dict[str, Any]:
    if mode == "lora":
        from peft.utils import get_peft_model_state_dict

        return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(inner).items()}
    return {k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()}


def load_trainable_state(inner: Any, mode: str, state: dict[str, Any]) -> None:
    if mode == "lora":
        from peft.utils import set_peft_model_state_dict

        result = set_peft_model_state_dict(inner, state)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise RuntimeError(f"checkpoint LoRA keys do not fit the model: {unexpected[:3]}")
    else:
        inner.load_state_dict(state)


def save_checkpoint(out_uri: str, step: int, inner: Any, mode: str, optimizer: Any, scheduler: Any,
                    state: dict[str, Any], log_rows: list[dict[str, Any]], keep: int) -> str:
    log = pa.Table.from_pylist(log_rows, schema=TRAIN_LOG_SCHEMA)
    return checkpoints.save_checkpoint(out_uri, step, trainable_state(inner, mode), optimizer, scheduler, state, log,
                                       keep)


# --------------------------------------------------------------------------- the training loop
def train_step(spec: Any, pipe: Any, model: Any, params: list, optimizer: Any, scheduler: Any, batch: Any,
               grad_clip: float) -> tuple[Any, float, float]:
    """One optimizer step of LiFT's loss; returns (per-sample losses, gradient norm before clipping, lr used)."""
    import torch

    from lift_core.t2v.loss import per_sample_loss, reward_weighted_loss

    per_sample = per_sample_loss(spec, pipe, model, batch)
    loss = reward_weighted_loss(per_sample, batch.rewards)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip and grad_clip > 0 else torch.tensor(0.0)
    lr = float(scheduler.get_last_lr()[0]) if scheduler is not None else float(optimizer.param_groups[0]["lr"])
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return per_sample.detach(), float(grad_norm), lr


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


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: LiFT's reward-weighted fine-tuning, resumable from ``<out>/checkpoints``."""
    import ray.train
    import ray.train.torch
    import torch

    from lift_core.t2v.cache import TensorCache, caption_key
    from lift_core.t2v.loss import make_batch, sample_seed
    from lift_core.t2v.spec import get_spec

    cfg = PipelineConfig.model_validate(config["cfg"])
    a, tr = cfg.align, cfg.align.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if tr.batch_size % world:
        raise ValueError(f"align.train.batch_size={tr.batch_size} must divide evenly over {world} workers")
    local_b = tr.batch_size // world
    torch.set_num_threads(max(1, int(a.cpus_per_worker)))
    torch.manual_seed(tr.seed)
    out_uri = config["out_uri"]
    device = ray.train.torch.get_device()

    spec = get_spec(cfg.t2v.family)
    pipe = spec.load_pipeline(config["model"], cfg.t2v.dtype, "cpu", parts="denoiser")
    inner = spec.denoiser(pipe)
    add_trainable(spec, inner, a.mode, a.lora)

    resume = latest_checkpoint(out_uri)
    start = 0
    if resume is not None:
        start, ck = resume
        load_trainable_state(inner, a.mode, _load_safetensors(storage.join(ck, "trainable.safetensors")))
    model = ray.train.torch.prepare_model(inner, parallel_strategy="ddp" if world > 1 else None)
    params = [p for p in inner.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay)
    warmup = max(0, tr.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))
    log_rows: list[dict[str, Any]] = []
    if resume is not None:
        optimizer.load_state_dict(torch_load(storage.join(ck, "optimizer.pt")))
        scheduler.load_state_dict(torch_load(storage.join(ck, "lr_scheduler.pt")))
        log_rows = storage.read_table(storage.join(ck, "train_log.parquet")).to_pylist()

    samples = config["samples"]
    order = DataOrder(len(samples), tr.seed)
    latents = TensorCache(config["latents_uri"])
    texts = TensorCache(config["text_uri"])
    crash_at = config.get("crash_at_step")
    dtype = getattr(torch, cfg.t2v.dtype)

    for step in range(start, tr.max_steps):
        if crash_at is not None and step + 1 == crash_at and rank == 0:
            marker = storage.join(out_uri, f"_crashed_at_step_{crash_at}")
            if not storage.exists(marker):  # one-shot, so a restarted worker group goes on
                storage.write_bytes_atomic(marker, b"")
                os._exit(1)
        t0 = time.perf_counter()
        positions = range(step * tr.batch_size + rank * local_b, step * tr.batch_size + (rank + 1) * local_b)
        rows = [samples[order(p)] for p in positions]
        dists = latents.get_many([r["video_id"] for r in rows])
        embeds = texts.get_many([caption_key(r["caption"]) for r in rows])
        batch = make_batch(
            spec, pipe,
            [dists[r["video_id"]] for r in rows],
            [embeds[caption_key(r["caption"])] for r in rows],
            [r["weight"] for r in rows],
            [sample_seed(tr.seed, p) for p in positions],
            device=device, dtype=dtype,
        )
        per_sample, grad_norm, lr = train_step(spec, pipe, model, params, optimizer, scheduler, batch, tr.grad_clip)
        sums = torch.tensor(
            [float((batch.rewards * per_sample.detach()).sum()), float(per_sample.detach().sum()),
             float(batch.rewards.sum()), float(local_b)], dtype=torch.float64,
        )
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(sums)
        n = float(sums[3])
        log_rows.append({
            "step": step + 1, "loss": float(sums[0]) / n, "loss_unweighted": float(sums[1]) / n,
            "mean_weight": float(sums[2]) / n, "lr": lr, "grad_norm": float(grad_norm),
            "samples_seen": (step + 1) * tr.batch_size, "world_size": world,
            "step_time_s": time.perf_counter() - t0,
        })
        last = step + 1 == tr.max_steps
        if (step + 1) % max(1, tr.checkpoint_every) == 0 or last:
            if rank == 0:
                save_checkpoint(out_uri, step + 1, inner, a.mode, optimizer, scheduler,
                                {"step": step + 1, "samples_seen": (step + 1) * tr.batch_size,
                                 "world_size": world, "mode": a.mode}, log_rows, a.keep_checkpoints)
            ray.train.report({"step": step + 1, "loss": log_rows[-1]["loss"]})

    if rank == 0:
        final = {"step": tr.max_steps, "resumed_from_step": start}
        if a.mode == "lora":
            write_dir(config["lora_uri"], lambda d: spec.save_lora(d, inner))
        else:
            write_dir(config["weights_uri"], lambda d: spec.save_denoiser(inner, os.path.join(d, "transformer")))
        storage.write_table(config["train_log_uri"], pa.Table.from_pylist(log_rows, schema=TRAIN_LOG_SCHEMA))
        storage.write_json(storage.join(out_uri, "train_result.json"), final)
    ray.train.report({"step": tr.max_steps, "done": 1})


def _load_safetensors(uri: str) -> dict[str, Any]:
    from safetensors.torch import load

    return load(storage.read_bytes(uri))


def run_trainer(cfg: PipelineConfig, config: dict[str, Any], run_name: str) -> None:
    """Run ``train_loop`` under Ray Train's ``TorchTrainer`` (DDP; gloo on CPU, NCCL on GPUs)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from lift_core.distributed.ray_runtime import ensure_ray

    ensure_ray(cfg.ray)
    tr = cfg.align.train
    resources = {"CPU": cfg.align.cpus_per_worker}
    if tr.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=tr.num_workers, use_gpu=tr.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name,
            storage_path=os.path.join(tempfile.gettempdir(), "lift-ray-train"),
            failure_config=FailureConfig(max_failures=cfg.align.max_failures),
        ),
    )
    trainer.fit()


def run_align(
    cfg: PipelineConfig,
    scores_uri: str,
    manifest_uris: list[str],
    progress: ProgressFn | None = None,
) -> storage.StageResult:
    """The ``align`` stage: outputs ``lora`` (or ``weights``), ``train_log``, ``samples``, ``quarantine``."""
    from lift_core.t2v.builder import ensure_t2v_base
    from lift_core.t2v.cache import fill_cache, namespaces

    progress = resolve(progress)
    get_spec(cfg.t2v.family).check_shape(cfg.t2v.height, cfg.t2v.width, cfg.t2v.num_frames)
    a = cfg.align
    if a.mode == "lora" and not a.lora.target_modules:
        raise ValueError("align.lora.target_modules is empty")
    if a.train.batch_size % max(1, a.train.num_workers):
        raise ValueError(
            f"align.train.batch_size={a.train.batch_size} (global) must divide evenly over "
            f"align.train.num_workers={a.train.num_workers}"
        )
    upstream = [storage.fingerprint_uri(u) for u in [scores_uri, *manifest_uris]]
    key = storage.stage_key("align", upstream, align_fingerprint(cfg), {"t2v": cfg.t2v.fingerprint()})
    out = storage.abspath_if_local(storage.stage_dir(cfg.run_root, "align", key))
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
    crash = os.environ.get(CRASH_ENV)
    config = {
        "cfg": cfg.model_dump(mode="json"),
        "model": model,
        "samples": samples,
        "latents_uri": ns.latents_uri,
        "text_uri": ns.text_uri,
        "out_uri": out,
        "lora_uri": outputs.get("lora"),
        "weights_uri": outputs.get("weights"),
        "train_log_uri": outputs["train_log"],
        "crash_at_step": int(crash) if crash else None,
    }
    run_name = a.train.run_name or f"lift-align-{key}-{uuid.uuid4().hex[:6]}"
    try:
        run_trainer(cfg, config, run_name)
    except Exception as err:  # Ray wraps worker errors; keep one readable line on top
        raise RuntimeError(f"align training failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                           f"rerun to resume from the last checkpoint") from err
    result = storage.read_json(storage.join(out, "train_result.json"))
    log_table = storage.read_table(outputs["train_log"])
    losses = log_table.column("loss").to_pylist()
    counts.update(cache.counts())
    counts.update({"samples": len(samples), "quarantined": len(quarantine), "steps": log_table.num_rows,
                   "resumed_from_step": int(result["resumed_from_step"])})
    k = max(1, min(10, len(losses) // 4))
    metrics = {
        "mode": a.mode,
        "critic_ids": sorted({s["critic_id"] for s in samples if s["critic_id"]}),
        "mean_weight": float(np.mean([s["weight"] for s in samples])),
        "loss_first": float(np.mean(losses[:k])) if losses else None,
        "loss_last": float(np.mean(losses[-k:])) if losses else None,
        "cache": {"latents": ns.latents_uri, "text": ns.text_uri},
    }
    progress(1.0, f"aligned: {log_table.num_rows} steps, loss {metrics['loss_first']:.4g} -> {metrics['loss_last']:.4g}")
    return storage.mark_success(storage.StageResult("align", key, out, outputs, counts, metrics))


__all__ = [
    "CRASH_ENV",
    "DataOrder",
    "SAMPLES_SCHEMA",
    "TRAIN_LOG_SCHEMA",
    "add_trainable",
    "align_fingerprint",
    "build_dataset",
    "latest_checkpoint",
    "run_align",
    "train_loop",
    "train_step",
]
