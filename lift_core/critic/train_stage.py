"""The ``train_critic`` stage: the rated examples, the tiny base if configured, ``CriticLoraRecipe`` in the
one training loop, then agreement with the held-out human labels (``metrics.json``).

Outputs under ``<run_root>/train_critic/<key>/``: ``adapter`` (a standard PEFT dir), ``metrics``,
``predictions`` (held-out label probabilities, read as scoring reads them), ``train_log`` and
``quarantine``. A rerun with the same inputs and config is a cache hit; a crashed one resumes from its
newest intact checkpoint, under any world size.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from lift_core import storage
from lift_core.config import DIMENSIONS, PipelineConfig
from lift_core.critic.train import CriticLoraRecipe
from lift_core.model_identity import critic_base_fingerprint
from lift_core.progress import ProgressFn, resolve
from lift_core.schemas import QUARANTINE_SCHEMA, rows_to_table
from lift_core.train import Callback, LoopSettings, fit, latest_checkpoint, resume_message
from lift_core.train.loop import loss_trend, training_fingerprint

STAGE = "train_critic"
# Critic fields that decide how a run executes, not what it computes (left out of the stage key).
EXECUTION_FIELDS = {"cpus_per_worker", "max_failures", "keep_checkpoints", "eval_batch_size"}


def critic_fingerprint(cfg: PipelineConfig) -> str:
    return training_fingerprint(cfg.critic, EXECUTION_FIELDS)


def _split_rows(examples: list[Any], split: str) -> list[dict[str, Any]]:
    return [e.to_dict() for e in examples if e.split == split]


def stage_out(cfg: PipelineConfig, manifest_uri: str, frames_uri: str) -> tuple[str, str]:
    """(key, output dir) of the stage for these inputs and this config."""
    upstream = [storage.fingerprint_uri(u) for u in (manifest_uri, frames_uri)]
    key = storage.stage_key(STAGE, upstream, critic_fingerprint(cfg), {"base": critic_base_fingerprint(cfg)})
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
    phases = "".join(f"{p.steps} steps of {'+'.join(p.dimensions)}, then " for p in cfg.critic.curriculum)
    progress(0.05, f"{len(train)} training examples, {len(held_out)} held out; training {tr.max_steps} steps "
                   f"({phases}all dimensions) on {tr.num_workers} worker(s), {resume_message(out)}")
    run_name = tr.run_name or f"lift-critic-{key}-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    fit(CriticLoraRecipe(), cfg, plan.config["settings"], {**plan.config, "callbacks": list(callbacks)}, out,
        run_name, what="critic", progress=lambda f, m: progress(0.05 + 0.85 * f, m))
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

