"""The ``train_critic`` stage: LoRA fine-tuning of the video critic on rated videos, then held-out agreement.

1. Examples: one per (video, dimension) of the manifest's ``lift-hra`` rows (``critic.dataset``);
   the ``train`` split trains, ``val`` and ``test`` are evaluated. Frames come from the decode
   stage's Parquet through a local memory-mapped ``FrameStore``.
2. Ray Train ``TorchTrainer`` (gloo on CPU, NCCL on GPU; ``critic.train.num_workers``) runs
   ``train_loop``: the base critic via ``load_critic``, a peft LoRA (``critic.lora``: targets, rank,
   alpha, ``modules_to_save``), AdamW, warmup then cosine/constant LR, gradient clipping. The loss is
   the cross-entropy of the answer tokens only (``"Label. reason"`` + end of turn), the label token
   weighted by ``critic.label_token_weight``. ``critic.train.batch_size`` is the global batch, split
   over the workers; the sample at stream position p depends only on p (one seeded permutation per
   epoch), so a resumed run sees exactly the data an uninterrupted run would. ``critic.curriculum``
   phases first train some dimensions alone (``CurriculumOrder``); one LR schedule spans all steps.
3. Checkpoints every ``critic.train.checkpoint_every`` steps under ``<out>/checkpoints/step-N/``: the
   trainable weights (LoRA + modules_to_save), optimizer, LR scheduler, data position and the loss
   log; ``state.json`` is written last and marks it complete. Rerunning the same config finds the
   same stage dir and resumes from the newest complete checkpoint.
4. Rank 0 writes the standard PEFT adapter (``<out>/adapter``, ``PeftModel.from_pretrained`` loads
   it) and scores the held-out examples exactly as scoring does (left padding, label-token
   probabilities at the first answer position) into ``predictions.parquet``.
5. The driver computes agreement with the human labels (``lift_core.metrics.agreement``) and writes
   ``metrics.json``: ``{semantic|fidelity|motion: {accuracy, macro_f1, spearman, majority_accuracy,
   confusion, ...}, n_test, critic_id, ...}``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from lift_core import storage
from lift_core.distributed import checkpoints
from lift_core.distributed.checkpoints import DataOrder, latest_checkpoint, torch_load, write_dir
from lift_core.config import DIMENSIONS, LABELS, PipelineConfig
from lift_core.progress import ProgressFn, resolve
from lift_core.schemas import QUARANTINE_SCHEMA, rows_to_table

log = logging.getLogger("lift.critic")

STAGE = "train_critic"
CRASH_ENV = "LIFT_CRITIC_CRASH_AT_STEP"  # fault injection for resume tests: rank 0 dies before that step
# Fields that decide how a run executes, not what it computes: left out of the stage key, so a rerun
# with another world size finds and resumes the same run.
EXECUTION_FIELDS = {"cpus_per_worker", "max_failures", "keep_checkpoints", "eval_batch_size"}
EXECUTION_TRAIN_FIELDS = {"num_workers", "use_gpu", "run_name", "checkpoint_every"}

TRAIN_LOG_SCHEMA = pa.schema(
    [
        ("step", pa.int64()),
        ("loss", pa.float64()),  # weighted answer-token cross-entropy, over the global batch
        ("label_loss", pa.float64()),  # cross-entropy of the label token alone
        ("label_accuracy", pa.float64()),  # argmax over the three label tokens == human label
        ("lr", pa.float64()),
        ("grad_norm", pa.float64()),
        ("samples_seen", pa.int64()),
        ("world_size", pa.int32()),
        ("step_time_s", pa.float64()),
    ]
)
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("split", pa.string()),
        ("dimension", pa.string()),
        ("label", pa.string()),  # the human label
        ("p_good", pa.float64()),
        ("p_normal", pa.float64()),
        ("p_bad", pa.float64()),
        ("pred", pa.string()),
    ]
)


def critic_fingerprint(cfg: PipelineConfig) -> str:
    c = cfg.critic.model_dump(mode="json")
    for k in EXECUTION_FIELDS:
        c.pop(k, None)
    for k in EXECUTION_TRAIN_FIELDS:
        c["train"].pop(k, None)
    return storage.hash_parts(c)


# --------------------------------------------------------------------------- checkpoints
def trainable_state(model: Any) -> dict[str, Any]:
    """The adapter's weights: LoRA matrices and the ``modules_to_save`` copies."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"checkpoint weights do not fit the model: {unexpected[:3]}")


def save_checkpoint(out_uri: str, step: int, model: Any, optimizer: Any, scheduler: Any,
                    state: dict[str, Any], log_rows: list[dict[str, Any]], keep: int) -> str:
    log = pa.Table.from_pylist(log_rows, schema=TRAIN_LOG_SCHEMA)
    return checkpoints.save_checkpoint(out_uri, step, trainable_state(model), optimizer, scheduler, state, log, keep)


def truncate_reason(tokenizer: Any, reason: str, max_tokens: int) -> str:
    ids = tokenizer(reason, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return reason
    return tokenizer.decode(ids[:max_tokens]).strip()


def lr_lambda(warmup: int, total: int, schedule: str) -> Callable[[int], float]:
    """Linear warmup over ``warmup`` steps, then constant or cosine decay to 0 at ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def group_schedules(optimizer: Any, c: Any) -> list[Callable[[int], float]]:
    """LR multipliers per parameter group (LoRA first): the LoRA group starts at ``lora_start_step``."""
    tr = c.train
    lora_start = min(c.lora_start_step, max(0, tr.max_steps - 1))
    base = lr_lambda(max(0, tr.warmup_steps), tr.max_steps, c.lr_schedule)
    late = lr_lambda(max(0, tr.warmup_steps), tr.max_steps - lora_start, c.lr_schedule)

    def lora(step: int) -> float:
        return 0.0 if step < lora_start else late(step - lora_start)

    return [lora] + [base] * (len(optimizer.param_groups) - 1)


def answer_loss(logits: Any, labels: Any, label_weight: float, label_ids: list[int], label_targets: Any) -> dict[str, Any]:
    """Summed answer-token losses of a batch (next-token prediction; ``labels`` -100 outside the answers).

    Returns sums, so workers can all-reduce before dividing: ``weighted`` (label token times
    ``label_weight``), ``weight`` (the divisor), ``label_ce`` and ``label_correct`` (argmax over the
    three label tokens at each row's first answer position) and ``rows``.
    """
    import torch
    import torch.nn.functional as F

    shift_logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != -100
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), targets.reshape(-1).clamp_min(0),
                         reduction="none").view_as(targets) * mask
    # The first answer token of each row is its label.
    first = mask.float().argmax(dim=1)
    rows = torch.arange(targets.shape[0], device=targets.device)
    weights = mask.float()
    weights[rows, first] = label_weight
    label_logits = shift_logits[rows, first][:, label_ids]
    return {
        "weighted": (ce * weights).sum(),
        "weight": weights.sum(),
        "label_ce": ce[rows, first].sum(),
        "label_correct": (label_logits.argmax(dim=1) == label_targets).sum(),
        "rows": torch.tensor(float(targets.shape[0]), device=targets.device),
    }


class CurriculumOrder:
    """(step, slot in the global batch) -> training example index.

    Each ``critic.curriculum`` phase draws only its dimensions' examples, for its steps; then all
    examples train until the end. Within a segment, stream position (step - segment start) * batch
    + slot goes through a seeded per-epoch permutation (``DataOrder``), so an example depends only on
    (step, slot): a resumed run, under any world size, sees what an uninterrupted one would. Without
    a curriculum it is ``DataOrder(len(train), seed)`` at position step * batch + slot.
    """

    def __init__(self, train: list[dict[str, Any]], phases: list[Any], seed: int):
        self.segments: list[tuple[int, list[int], DataOrder]] = []
        start = 0
        for k, phase in enumerate(phases):
            idx = [i for i, e in enumerate(train) if e["dimension"] in phase.dimensions]
            if not idx:
                raise ValueError(f"critic.curriculum phase {k + 1}: no training examples of {phase.dimensions}")
            self.segments.append((start, idx, DataOrder(len(idx), seed + 7919 * (k + 1))))
            start += phase.steps
        self.segments.append((start, list(range(len(train))), DataOrder(len(train), seed)))

    def __call__(self, step: int, slot: int, batch_size: int) -> int:
        for first, idx, order in reversed(self.segments):
            if step >= first:
                return idx[order((step - first) * batch_size + slot)]
        raise ValueError(f"negative step {step}")


# --------------------------------------------------------------------------- model
def add_lora(model: Any, lora: Any) -> Any:
    """A peft LoRA on ``model`` (base frozen); ``modules_to_save`` are trained in full."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    if not lora.target_modules:
        raise ValueError("critic.lora.target_modules is empty")
    config = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules),
        modules_to_save=list(lora.modules_to_save) or None, init_lora_weights=True, bias="none",
    )
    return get_peft_model(model, config)


def param_groups(model: Any, lr: float, modules_to_save_lr: float | None) -> list[dict[str, Any]]:
    """AdamW groups: the LoRA matrices at ``lr``, the fully trained ``modules_to_save`` at their own LR."""
    lora, full = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (lora if "lora_" in name else full).append(p)
    groups = [{"params": lora, "lr": lr}]
    if full:
        groups.append({"params": full, "lr": modules_to_save_lr or lr})
    return groups


def predict_label_probs(loaded: Any, videos: list[np.ndarray], captions: list[str], dimensions: list[str],
                        batch_size: int = 16) -> np.ndarray:
    """``[N, 3]`` probabilities of (Good, Normal, Bad) at the first answer position, as scoring reads them."""
    import torch

    from lift_core.critic.backbone import encode_batch, to_device

    ids = [loaded.label_token_ids[label] for label in LABELS]
    out = []
    with torch.inference_mode():
        for s in range(0, len(videos), batch_size):
            inputs = encode_batch(loaded, videos[s:s + batch_size], captions[s:s + batch_size],
                                  dimensions[s:s + batch_size])
            logits = loaded.model(**to_device(inputs, loaded.device), logits_to_keep=1, use_cache=False).logits
            out.append(torch.softmax(logits[:, -1, ids].float(), dim=-1).cpu().numpy())
    return np.concatenate(out, axis=0).astype(np.float64) if out else np.zeros((0, len(LABELS)))


# --------------------------------------------------------------------------- the worker
def run_worker(config: dict[str, Any], rank: int = 0, world: int = 1, device: Any = "cpu",
               report: Callable[[dict[str, Any]], None] | None = None,
               wrap: Callable[[Any], Any] | None = None) -> None:
    """The training loop of one worker (``train_loop`` calls it under Ray Train; tests may call it directly)."""
    import torch

    from lift_core.critic.backbone import encode_batch, load_critic, to_device
    from lift_core.critic.dataset import FrameStore
    from lift_core.critic.prompts import format_answer

    cfg = PipelineConfig.model_validate(config["cfg"])
    c, tr = cfg.critic, cfg.critic.train
    if tr.batch_size % world:
        raise ValueError(f"critic.train.batch_size={tr.batch_size} must divide evenly over {world} workers")
    local_b = tr.batch_size // world
    torch.set_num_threads(max(1, int(c.cpus_per_worker)))
    torch.manual_seed(tr.seed)
    out_uri = config["out_uri"]
    report = report or (lambda metrics: None)

    loaded = load_critic(config["model"], backbone=c.backbone, device=device, frame_size=tuple(config["frame_size"]))
    model = add_lora(loaded.model, c.lora)
    loaded.model = model
    resume = latest_checkpoint(out_uri)
    start, log_rows = 0, []
    if resume is not None:
        start, ck = resume
        from safetensors.torch import load

        load_trainable_state(model, load(storage.read_bytes(storage.join(ck, "trainable.safetensors"))))
    model.to(device)
    model.train()
    net = wrap(model) if (wrap is not None and world > 1) else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, tr.lr, c.modules_to_save_lr), lr=tr.lr, weight_decay=tr.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, group_schedules(optimizer, c))
    if resume is not None:
        optimizer.load_state_dict(torch_load(storage.join(ck, "optimizer.pt")))
        scheduler.load_state_dict(torch_load(storage.join(ck, "lr_scheduler.pt")))
        log_rows = storage.read_table(storage.join(ck, "train_log.parquet")).to_pylist()

    store = FrameStore.build(config["frames_uri"], config["video_ids"], config["frame_store_dir"])
    tok = loaded.processor.tokenizer
    train = config["train"]
    answers = [format_answer(e["label"], truncate_reason(tok, e["reason"], c.max_reason_tokens)) for e in train]
    label_ids = [loaded.label_token_ids[label] for label in LABELS]
    order = CurriculumOrder(train, c.curriculum, tr.seed)
    crash_at = config.get("crash_at_step")

    for step in range(start, tr.max_steps):
        if crash_at is not None and step + 1 == crash_at and rank == 0:
            marker = storage.join(out_uri, f"_crashed_at_step_{crash_at}")
            if not storage.exists(marker):  # one-shot, so a rerun (or restarted worker group) goes on
                storage.write_bytes_atomic(marker, b"")
                os._exit(1)
        t0 = time.perf_counter()
        idx = [order(step, slot, tr.batch_size) for slot in range(rank * local_b, (rank + 1) * local_b)]
        rows = [train[i] for i in idx]
        inputs = encode_batch(loaded, [store[r["video_id"]] for r in rows], [r["caption"] for r in rows],
                              [r["dimension"] for r in rows], [answers[i] for i in idx])
        labels = inputs.pop("labels").to(device)
        targets = torch.tensor([LABELS.index(r["label"]) for r in rows], device=device)
        out = net(**to_device(inputs, device), use_cache=False)
        sums = answer_loss(out.logits, labels, c.label_token_weight, label_ids, targets)
        weight_total = sums["weight"].detach().clone()
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(weight_total)
        # Sum over workers / global weight: DDP averages gradients, so scale by the world size.
        loss = sums["weighted"] * world / weight_total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tr.grad_clip) if tr.grad_clip > 0 else torch.tensor(0.0)
        lr = float(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
        stats = torch.stack([sums["weighted"].detach(), sums["weight"].detach(), sums["label_ce"].detach(),
                             sums["label_correct"].detach().float(), sums["rows"].detach()]).double().cpu()
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(stats)
        log_rows.append({
            "step": step + 1, "loss": float(stats[0] / stats[1]), "label_loss": float(stats[2] / stats[4]),
            "label_accuracy": float(stats[3] / stats[4]), "lr": lr, "grad_norm": float(grad_norm),
            "samples_seen": (step + 1) * tr.batch_size, "world_size": world,
            "step_time_s": time.perf_counter() - t0,
        })
        last = step + 1 == tr.max_steps
        if (step + 1) % max(1, tr.checkpoint_every) == 0 or last:
            if rank == 0:
                save_checkpoint(out_uri, step + 1, model, optimizer, scheduler,
                                {"step": step + 1, "samples_seen": (step + 1) * tr.batch_size, "world_size": world},
                                log_rows, c.keep_checkpoints)
            report({"step": step + 1, "loss": log_rows[-1]["loss"], "label_accuracy": log_rows[-1]["label_accuracy"]})

    if rank == 0:
        model.eval()
        write_dir(config["adapter_uri"], lambda d: model.save_pretrained(d))
        storage.write_table(config["train_log_uri"], pa.Table.from_pylist(log_rows, schema=TRAIN_LOG_SCHEMA))
        evaluate_rows = config["evaluate"]
        probs = predict_label_probs(loaded, [store[e["video_id"]] for e in evaluate_rows],
                                    [e["caption"] for e in evaluate_rows], [e["dimension"] for e in evaluate_rows],
                                    c.eval_batch_size)
        preds = [
            {"video_id": e["video_id"], "split": e["split"], "dimension": e["dimension"], "label": e["label"],
             "p_good": float(p[0]), "p_normal": float(p[1]), "p_bad": float(p[2]), "pred": LABELS[int(np.argmax(p))]}
            for e, p in zip(evaluate_rows, probs)
        ]
        storage.write_table(config["predictions_uri"], pa.Table.from_pylist(preds, schema=PREDICTIONS_SCHEMA))
        storage.write_json(storage.join(out_uri, "train_result.json"),
                           {"step": tr.max_steps, "resumed_from_step": start})
    report({"step": tr.max_steps, "done": 1})


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker entry point."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    run_worker(
        config, ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(),
        report=lambda metrics: ray.train.report(metrics),
        wrap=lambda m: ray.train.torch.prepare_model(m, move_to_device=False, parallel_strategy="ddp"),
    )


def run_trainer(cfg: PipelineConfig, config: dict[str, Any], run_name: str) -> None:
    """``train_loop`` under Ray Train's ``TorchTrainer`` (DDP; gloo on CPU, NCCL on GPUs)."""
    from lift_core.distributed.critic_trainer import fit

    fit(cfg, train_loop, config, run_name)


# --------------------------------------------------------------------------- the stage
def _split_rows(examples: list[Any], split: str) -> list[dict[str, Any]]:
    return [e.to_dict() for e in examples if e.split == split]


def stage_out(cfg: PipelineConfig, manifest_uri: str, frames_uri: str) -> tuple[str, str]:
    """(key, output dir) of the stage for these inputs and this config."""
    upstream = [storage.fingerprint_uri(u) for u in (manifest_uri, frames_uri)]
    key = storage.stage_key(STAGE, upstream, critic_fingerprint(cfg))
    return key, storage.abspath_if_local(storage.stage_dir(cfg.run_root, STAGE, key))


@dataclass
class TrainPlan:
    """Everything a training run needs: ``config`` is what every Ray Train worker receives."""

    key: str
    out: str
    model: str
    outputs: dict[str, str]
    train: list[dict[str, Any]]
    held_out: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    config: dict[str, Any]


def plan_training(cfg: PipelineConfig, manifest_uri: str, frames_uri: str) -> TrainPlan:
    """Examples (train / held out), the base model (built if tiny), the frame store and the worker config."""
    from lift_core.critic.builder import ensure_critic_base
    from lift_core.critic.dataset import FrameStore, drop_without_frames, frames_index, load_examples

    key, out = stage_out(cfg, manifest_uri, frames_uri)
    tr = cfg.critic.train
    if tr.batch_size % max(1, tr.num_workers):
        raise ValueError(f"critic.train.batch_size={tr.batch_size} (global) must divide evenly over "
                         f"critic.train.num_workers={tr.num_workers}")
    model = ensure_critic_base(cfg)
    examples, quarantine = load_examples(manifest_uri)
    manifest = storage.read_table(manifest_uri, columns=["video_id", "uri"]).to_pylist()
    examples, missing = drop_without_frames(examples, frames_index(frames_uri), {r["video_id"]: r["uri"] for r in manifest})
    quarantine += missing
    train = _split_rows(examples, "train")
    held_out = _split_rows(examples, "test") + _split_rows(examples, "val")
    if not train:
        raise ValueError(f"no rated training examples with frames in {manifest_uri} (quarantined: {len(quarantine)})")
    if not any(e["split"] == "test" for e in held_out):
        raise ValueError(f"no rated test examples with frames in {manifest_uri}: nothing to measure agreement on")
    outputs = {
        "adapter": storage.join(out, "adapter"),
        "metrics": storage.join(out, "metrics.json"),
        "predictions": storage.join(out, "predictions.parquet"),
        "train_log": storage.join(out, "train_log.parquet"),
        "quarantine": storage.join(out, "quarantine.parquet"),
    }
    video_ids = sorted({e["video_id"] for e in train + held_out})
    store_dir = os.path.join(tempfile.gettempdir(), "lift-critic-frames",
                             storage.hash_parts(storage.fingerprint_uri(frames_uri), video_ids))
    store = FrameStore.build(frames_uri, video_ids, store_dir)
    crash = os.environ.get(CRASH_ENV)
    config = {
        "cfg": cfg.model_dump(mode="json"),
        "model": model,
        "frames_uri": frames_uri,
        "frame_store_dir": store_dir,
        "frame_size": list(store.frame_shape[1:3]),
        "video_ids": video_ids,
        "train": train,
        "evaluate": held_out,
        "out_uri": out,
        "adapter_uri": outputs["adapter"],
        "train_log_uri": outputs["train_log"],
        "predictions_uri": outputs["predictions"],
        "crash_at_step": int(crash) if crash else None,
    }
    return TrainPlan(key, out, model, outputs, train, held_out, quarantine, config)


def run_train_critic(
    cfg: PipelineConfig,
    manifest_uri: str,
    frames_uri: str,
    progress: ProgressFn | None = None,
) -> storage.StageResult:
    """The ``train_critic`` stage: outputs ``adapter`` (PEFT dir), ``metrics`` (metrics.json),
    ``predictions``, ``train_log``, ``quarantine``; ``StageResult.metrics`` is metrics.json."""
    from lift_core.critic.backbone import critic_id
    from lift_core.metrics.agreement import agreement_report

    progress = resolve(progress)
    key, out = stage_out(cfg, manifest_uri, frames_uri)
    if done := storage.load_success(out):
        return done
    plan = plan_training(cfg, manifest_uri, frames_uri)
    train, held_out, outputs, tr = plan.train, plan.held_out, plan.outputs, cfg.critic.train
    storage.write_table(outputs["quarantine"], rows_to_table(plan.quarantine, QUARANTINE_SCHEMA))
    resume = latest_checkpoint(out)
    phases = "".join(f"{p.steps} steps of {'+'.join(p.dimensions)}, then " for p in cfg.critic.curriculum)
    progress(0.05, f"{len(train)} training examples, {len(held_out)} held out; training {tr.max_steps} steps "
                   f"({phases}all dimensions) on {tr.num_workers} worker(s)"
                   + (f", resuming from step {resume[0]}" if resume else ""))
    run_name = tr.run_name or f"lift-critic-{key}-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    try:
        run_trainer(cfg, plan.config, run_name)
    except Exception as err:  # Ray wraps worker errors; keep one readable line on top
        raise RuntimeError(f"critic training failed ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}); rerun to resume from the last checkpoint") from err
    train_s = time.perf_counter() - t0
    progress(0.9, "computing agreement with the held-out human labels")

    result = storage.read_json(storage.join(out, "train_result.json"))
    preds = storage.read_table(outputs["predictions"]).to_pylist()
    train_labels = {d: [e["label"] for e in train if e["dimension"] == d] for d in DIMENSIONS}
    metrics = _agreement(preds, "test", train_labels, cfg.critic.label_values, agreement_report)
    if any(p["split"] == "val" for p in preds):
        metrics["val"] = _agreement(preds, "val", train_labels, cfg.critic.label_values, agreement_report)
    log_table = storage.read_table(outputs["train_log"]).to_pylist()
    k = max(1, min(10, len(log_table) // 4))
    metrics.update({
        "critic_id": critic_id(plan.model, storage.local_path(outputs["adapter"]) or outputs["adapter"]),
        "base_model": plan.model,
        "backbone": cfg.critic.backbone,
        "n_train": len(train),
        "steps": len(log_table),
        "resumed_from_step": int(result["resumed_from_step"]),
        "loss_first": float(np.mean([r["loss"] for r in log_table[:k]])),
        "loss_last": float(np.mean([r["loss"] for r in log_table[-k:]])),
        "train_label_accuracy_last": float(np.mean([r["label_accuracy"] for r in log_table[-k:]])),
        "train_seconds": round(train_s, 2),
    })
    storage.write_json(outputs["metrics"], metrics)
    counts = {"train_examples": len(train), "held_out_examples": len(held_out), "n_test": metrics["n_test"],
              "quarantined": len(plan.quarantine), "steps": len(log_table),
              "resumed_from_step": int(result["resumed_from_step"])}
    progress(1.0, "critic trained")
    return storage.mark_success(storage.StageResult(STAGE, key, out, outputs, counts, metrics))


def _agreement(preds: list[dict[str, Any]], split: str, train_labels: dict[str, list[str]],
               label_values: dict[str, float], report_fn: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    rows = [p for p in preds if p["split"] == split]
    true = {d: [p["label"] for p in rows if p["dimension"] == d] for d in DIMENSIONS}
    probs = {d: np.array([[p["p_good"], p["p_normal"], p["p_bad"]] for p in rows if p["dimension"] == d]).reshape(-1, 3)
             for d in DIMENSIONS}
    true = {d: v for d, v in true.items() if v}
    return report_fn(true, probs, train_labels, label_values, n_test=len({p["video_id"] for p in rows}))
