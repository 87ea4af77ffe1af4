"""The ``train_critic`` stage: LoRA fine-tuning of the video critic on rated videos, then held-out agreement.

1. Examples: one per (video, dimension) of the manifest's ``lift-hra`` rows (``critic.dataset``);
   the ``train`` split trains, ``val`` and ``test`` are evaluated. Frames come from the decode
   stage's Parquet through a local memory-mapped ``FrameStore``.
2. ``CriticLoraRecipe`` runs in the one training loop (``lift_core.train``): the base critic from the
   backbone registry, a peft LoRA (``critic.lora``: targets, rank, alpha, ``modules_to_save``), and the
   cross-entropy of the answer tokens only (``"Label. reason"`` + end of turn), the label token
   weighted by ``critic.label_token_weight``. ``critic.curriculum`` phases first train some
   dimensions alone (``CurriculumOrder``); one LR schedule spans all steps. The loop owns Ray Train,
   resume, checkpoints, the schedule, clipping and accumulation.
3. Rank 0 writes the standard PEFT adapter (``<out>/adapter``, ``PeftModel.from_pretrained`` loads
   it) and scores the held-out examples exactly as scoring does (left padding, label-token
   probabilities at the first answer position) into ``predictions.parquet``.
4. The driver computes agreement with the human labels (``lift_core.metrics.agreement``) and writes
   ``metrics.json``: ``{semantic|fidelity|motion: {accuracy, macro_f1, spearman, majority_accuracy,
   confusion, ...}, n_test, critic_id, ...}``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from lift_core import storage
from lift_core.config import DIMENSIONS, LABELS, PipelineConfig
from lift_core.progress import ProgressFn, resolve
from lift_core.schemas import QUARANTINE_SCHEMA, rows_to_table
from lift_core.train import Callback, DataOrder, LoopSettings, TrainModel, WorkerContext, fit, latest_checkpoint
from lift_core.train.loop import loss_trend, training_fingerprint
from lift_core.train.outputs import write_dir
from lift_core.train.trainable import adapter_state, load_adapter_state

log = logging.getLogger("lift.critic")

STAGE = "train_critic"
# Critic fields that decide how a run executes, not what it computes (left out of the stage key).
EXECUTION_FIELDS = {"cpus_per_worker", "max_failures", "keep_checkpoints", "eval_batch_size"}
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
    return training_fingerprint(cfg.critic, EXECUTION_FIELDS)


def truncate_reason(tokenizer: Any, reason: str, max_tokens: int) -> str:
    ids = tokenizer(reason, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return reason
    return tokenizer.decode(ids[:max_tokens]).strip()


def answer_weights(labels: Any, label_weight: float) -> Any:
    """Per-token loss weights of next-token targets: 1 on answer tokens, ``label_weight`` on each row's
    first answer token (its label), 0 elsewhere (``labels`` is -100 outside the answers)."""
    import torch

    mask = labels[:, 1:] != -100
    first = mask.float().argmax(dim=1)
    weights = mask.float()
    weights[torch.arange(labels.shape[0], device=labels.device), first] = label_weight
    return weights


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
    first = mask.float().argmax(dim=1)
    rows = torch.arange(targets.shape[0], device=targets.device)
    weights = answer_weights(labels, label_weight)
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


def param_groups(model: Any, modules_to_save_lr: float | None, lora_start_step: int = 0) -> list[dict[str, Any]]:
    """AdamW groups: the LoRA matrices (frozen until ``lora_start_step``), and the fully trained
    ``modules_to_save`` at their own LR."""
    lora, full = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (lora if "lora_" in name else full).append(p)
    groups: list[dict[str, Any]] = [{"params": lora, "start_step": lora_start_step}]
    if full:
        groups.append({"params": full, **({"lr": modules_to_save_lr} if modules_to_save_lr else {})})
    return groups


def predict_label_probs(loaded: Any, videos: list[np.ndarray], captions: list[str], dimensions: list[str],
                        batch_size: int = 16) -> np.ndarray:
    """``[N, 3]`` probabilities of (Good, Normal, Bad) at the first answer position, as scoring reads them."""
    import torch

    from lift_core.critic.backbone import encode_batch, to_device
    from lift_core.critic.scoring import label_probabilities

    ids = [loaded.label_token_ids[label] for label in LABELS]
    out = [np.zeros((0, len(LABELS)))]
    with torch.inference_mode():
        for s in range(0, len(videos), batch_size):
            inputs = to_device(encode_batch(loaded, videos[s:s + batch_size], captions[s:s + batch_size],
                                            dimensions[s:s + batch_size]), loaded.device)
            out.append(label_probabilities(loaded.backbone.answer_logits(loaded.model, inputs), ids))
    return np.concatenate(out, axis=0)


# --------------------------------------------------------------------------- the recipe
class CriticLoraRecipe:
    """LoRA on the critic; the loss is the weighted cross-entropy of the answer tokens."""

    log_columns = [
        ("loss", pa.float64()),  # weighted answer-token cross-entropy, over the global batch
        ("label_loss", pa.float64()),  # cross-entropy of the label token alone
        ("label_accuracy", pa.float64()),  # argmax over the three label tokens == human label
    ]

    def build(self, ctx: WorkerContext) -> TrainModel:
        from lift_core.critic.backbone import load_critic
        from lift_core.critic.dataset import FrameStore
        from lift_core.critic.prompts import format_answer

        c, config = ctx.cfg.critic, ctx.config
        loaded = load_critic(config["model"], backbone=c.backbone, device=ctx.device,
                             frame_size=tuple(config["frame_size"]))
        loaded.model = model = add_lora(loaded.model, c.lora)
        tok = loaded.processor.tokenizer
        train = config["train"]
        return TrainModel(
            module=model,
            param_groups=param_groups(model, c.modules_to_save_lr, c.lora_start_step),
            trainable_state=lambda: adapter_state(model),
            load_trainable_state=lambda state: load_adapter_state(model, state),
            handles={
                "loaded": loaded,
                "store": FrameStore.build(config["frames_uri"], config["video_ids"], config["frame_store_dir"]),
                "answers": [format_answer(e["label"], truncate_reason(tok, e["reason"], c.max_reason_tokens))
                            for e in train],
                "order": CurriculumOrder(train, c.curriculum, ctx.settings.seed),
                "label_ids": [loaded.label_token_ids[label] for label in LABELS],
            },
        )

    def make_batch(self, ctx: WorkerContext, model: TrainModel, positions: Sequence[int]) -> dict[str, Any]:
        import torch

        from lift_core.critic.backbone import encode_batch

        h, train, B = model.handles, ctx.config["train"], ctx.settings.batch_size
        idx = [h["order"](*divmod(p, B), B) for p in positions]
        rows = [train[i] for i in idx]
        inputs = encode_batch(h["loaded"], [h["store"][r["video_id"]] for r in rows], [r["caption"] for r in rows],
                              [r["dimension"] for r in rows], [h["answers"][i] for i in idx])
        labels = inputs.pop("labels").to(ctx.device)
        targets = torch.tensor([LABELS.index(r["label"]) for r in rows], device=ctx.device)
        return {"inputs": inputs, "labels": labels, "targets": targets,
                "label_weight": ctx.cfg.critic.label_token_weight}

    def normalizer(self, batch: dict[str, Any]) -> float:
        return float(answer_weights(batch["labels"], batch["label_weight"]).sum())

    def loss(self, ctx: WorkerContext, model: TrainModel, net: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from lift_core.critic.backbone import to_device

        out = net(**to_device(batch["inputs"], ctx.device), use_cache=False)
        sums = answer_loss(out.logits, batch["labels"], batch["label_weight"], model.handles["label_ids"],
                           batch["targets"])
        return sums["weighted"], sums

    def log_row(self, stats: dict[str, float]) -> dict[str, float]:
        return {"loss": stats["weighted"] / stats["weight"], "label_loss": stats["label_ce"] / stats["rows"],
                "label_accuracy": stats["label_correct"] / stats["rows"]}

    def finalize(self, ctx: WorkerContext, model: TrainModel, log_rows: list[dict[str, Any]]) -> None:
        config, loaded, store = ctx.config, model.handles["loaded"], model.handles["store"]
        write_dir(config["adapter_uri"], lambda d: model.module.save_pretrained(d))
        held_out = config["evaluate"]
        probs = predict_label_probs(loaded, [store[e["video_id"]] for e in held_out], [e["caption"] for e in held_out],
                                    [e["dimension"] for e in held_out], ctx.cfg.critic.eval_batch_size)
        preds = [
            {"video_id": e["video_id"], "split": e["split"], "dimension": e["dimension"], "label": e["label"],
             "p_good": float(p[0]), "p_normal": float(p[1]), "p_bad": float(p[2]), "pred": LABELS[int(np.argmax(p))]}
            for e, p in zip(held_out, probs)
        ]
        storage.write_table(config["predictions_uri"], pa.Table.from_pylist(preds, schema=PREDICTIONS_SCHEMA))


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
    settings = LoopSettings.for_stage(cfg.critic)
    settings.micro_batch(settings.num_workers, "critic.train")  # fail before any work on an uneven split
    model = ensure_critic_base(cfg)
    examples, quarantine = load_examples(manifest_uri)
    manifest = storage.read_table(manifest_uri, columns=["video_id", "uri"]).to_pylist()
    examples, missing = drop_without_frames(examples, frames_index(frames_uri), {r["video_id"]: r["uri"] for r in manifest},
                                            [frames_uri])
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
    config = {
        "cfg": cfg.model_dump(mode="json"),
        "settings": settings,
        "section": "critic.train",
        "out_uri": out,
        "model": model,
        "frames_uri": frames_uri,
        "frame_store_dir": store_dir,
        "frame_size": list(store.frame_shape[1:3]),
        "video_ids": video_ids,
        "train": train,
        "evaluate": held_out,
        "adapter_uri": outputs["adapter"],
        "predictions_uri": outputs["predictions"],
    }
    return TrainPlan(key, out, model, outputs, train, held_out, quarantine, config)


def run_train_critic(
    cfg: PipelineConfig,
    manifest_uri: str,
    frames_uri: str,
    progress: ProgressFn | None = None,
    callbacks: Sequence[Callback] = (),
) -> storage.StageResult:
    """The ``train_critic`` stage: outputs ``adapter`` (PEFT dir), ``metrics`` (metrics.json),
    ``predictions``, ``train_log``, ``quarantine``; ``StageResult.metrics`` is metrics.json.
    ``callbacks`` run inside the training loop on every worker (they must pickle)."""
    from lift_core.critic.backbone import critic_id
    from lift_core.metrics.agreement import agreement_from_predictions

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
    fit(CriticLoraRecipe(), cfg, plan.config["settings"], {**plan.config, "callbacks": list(callbacks)}, out,
        run_name, what="critic")
    train_s = time.perf_counter() - t0
    progress(0.9, "computing agreement with the held-out human labels")

    result = storage.read_json(storage.join(out, "train_result.json"))
    preds = storage.read_table(outputs["predictions"]).to_pylist()
    train_labels = {d: [e["label"] for e in train if e["dimension"] == d] for d in DIMENSIONS}
    metrics = agreement_from_predictions(preds, "test", train_labels, cfg.critic.label_values)
    if any(p["split"] == "val" for p in preds):
        metrics["val"] = agreement_from_predictions(preds, "val", train_labels, cfg.critic.label_values)
    log_table = storage.read_table(outputs["train_log"]).to_pylist()
    metrics.update({
        "critic_id": critic_id(plan.model, storage.local_path(outputs["adapter"]) or outputs["adapter"]),
        "base_model": plan.model,
        "backbone": cfg.critic.backbone,
        "n_train": len(train),
        "steps": len(log_table),
        "resumed_from_step": int(result["resumed_from_step"]),
        **loss_trend(log_table),
        "train_label_accuracy_last": loss_trend(log_table, "label_accuracy")["label_accuracy_last"],
        "train_seconds": round(train_s, 2),
    })
    storage.write_json(outputs["metrics"], metrics)
    counts = {"train_examples": len(train), "held_out_examples": len(held_out), "n_test": metrics["n_test"],
              "quarantined": len(plan.quarantine), "steps": len(log_table),
              "resumed_from_step": int(result["resumed_from_step"])}
    progress(1.0, "critic trained")
    return storage.mark_success(storage.StageResult(STAGE, key, out, outputs, counts, metrics))

