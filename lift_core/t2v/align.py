"""The T2V reward-alignment recipe: LiFT's reward-weighted likelihood (its step 3) on the family's denoiser.

``RewardAlignRecipe`` plugs into the one training loop (``lift_core.train``): LoRA (default) or full
fine-tuning of the denoiser with LiFT's loss (``lift_core.t2v.loss``) on cached latents and text
embeddings. A sample's latent draw, noise and timestep come from a generator seeded by its stream
position, so a run resumes exactly under another world size. Rank 0 writes a diffusers-format LoRA
(loads with ``CogVideoXPipeline.load_lora_weights``) or the full denoiser. The stage around it is
``lift_core.t2v.align_stage``; Diffusion-DPO (``lift_core.t2v.dpo``) reuses this recipe's model and cache.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import pyarrow as pa

from lift_core.train import DataOrder, TrainModel, WorkerContext
from lift_core.train.loop import log_schema
from lift_core.train.outputs import write_dir
from lift_core.train.trainable import adapter_state, full_state, load_adapter_state, load_full_state


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


def add_trainable(spec: Any, inner: Any, mode: str, lora: Any, full_modules: Sequence[str] = ()) -> list:
    """Make the denoiser trainable: a LoRA adapter (base frozen), or every weight, or (``full_modules``)
    only the named submodules in full; returns the trainable params."""
    if mode == "lora":
        from peft import LoraConfig as PeftLoraConfig

        inner.requires_grad_(False)
        inner.add_adapter(
            PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                           init_lora_weights=True, target_modules=list(lora.target_modules))
        )
    elif mode == "full" and full_modules:
        inner.requires_grad_(False)
        names = dict(inner.named_modules())
        unknown = [m for m in full_modules if m not in names]
        if unknown:
            top = sorted({n.split(".")[0] for n in names if n})
            raise ValueError(f"align.full_train_modules: no submodule {unknown} in {type(inner).__name__}; "
                             f"its top-level modules: {top}")
        for m in full_modules:
            names[m].requires_grad_(True)
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
        params = add_trainable(spec, inner, a.mode, a.lora, a.full_train_modules)
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
        from lift_core.t2v.loss import sample_seed

        rows = [ctx.config["samples"][model.handles["order"](p)] for p in positions]
        return self.encode_rows(ctx, model, rows, [sample_seed(ctx.settings.seed, p) for p in positions])

    def encode_rows(self, ctx: WorkerContext, model: TrainModel, rows: Sequence[dict[str, Any]],
                    seeds: Sequence[int]) -> Any:
        """The ``TrainBatch`` of these samples from the cache; a sample's latent draw, noise and timestep
        come from its seed."""
        import torch

        from lift_core.t2v.cache import caption_key
        from lift_core.t2v.loss import make_batch

        h = model.handles
        dists = h["latents"].get_many([r["video_id"] for r in rows])
        embeds = h["texts"].get_many([caption_key(r["caption"]) for r in rows])
        return make_batch(
            h["spec"], h["pipe"], [dists[r["video_id"]] for r in rows], [embeds[caption_key(r["caption"])] for r in rows],
            [r["weight"] for r in rows], seeds, device=ctx.device, dtype=getattr(torch, ctx.cfg.t2v.dtype),
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
