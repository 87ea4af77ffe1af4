"""The critic LoRA recipe: LoRA fine-tuning of the video critic to answer ``"Label. reason"``.

``CriticLoraRecipe`` plugs into the one training loop (``lift_core.train``): the base critic from the
backbone registry, a peft LoRA (``critic.lora``: targets, rank, alpha, ``modules_to_save``), and the
cross-entropy of the answer tokens only (``"Label. reason"`` + end of turn), the label token weighted
by ``critic.label_token_weight``. ``critic.curriculum`` phases first train some dimensions alone
(``CurriculumOrder``). After the last step rank 0 writes the standard PEFT adapter
(``PeftModel.from_pretrained`` loads it) and the held-out label probabilities, read exactly as scoring
reads them. The stage around it is ``lift_core.critic.train_stage``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from lift_core import storage
from lift_core.config import LABELS
from lift_core.train import DataOrder, TrainModel, WorkerContext
from lift_core.train.outputs import write_dir
from lift_core.train.trainable import adapter_state, load_adapter_state

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
def add_lora(model: Any, lora: Any, trainable_token_ids: Sequence[int] = ()) -> Any:
    """A peft LoRA on ``model`` (base frozen); ``modules_to_save`` are trained in full, and the embedding
    rows of ``trainable_token_ids`` too (peft's ``trainable_token_indices``)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    from lift_core.critic.backbone import peft_probe_quiet

    if not lora.target_modules:
        raise ValueError("critic.lora.target_modules is empty")
    config = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules),
        modules_to_save=list(lora.modules_to_save) or None, init_lora_weights=True, bias="none",
        trainable_token_indices=sorted(set(trainable_token_ids)) or None,
    )
    with peft_probe_quiet():
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
        label_ids = [loaded.label_token_ids[label] for label in LABELS]
        loaded.model = model = add_lora(loaded.model, c.lora, label_ids if c.train_label_tokens else ())
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
                "label_ids": label_ids,
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
