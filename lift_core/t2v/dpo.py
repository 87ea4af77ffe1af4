"""Diffusion-DPO beside LiFT's reward-weighted likelihood (``align.objective: dpo``).

Preference pairs come from videos of one prompt: the higher critic reward wins, and pairs whose rewards
differ by less than ``align.dpo.min_gap`` are dropped (too close to call). For a pair (w, l) both
videos get the same noise and timestep, and with ``err`` the family's per-sample diffusion loss
(``lift_core.t2v.loss.per_sample_loss``)::

    loss = -log sigmoid(-beta / 2 * ((err_w - err_l) - (ref_err_w - ref_err_l)))

The reference is the frozen base: the LoRA adapter switched off (``disable_adapters``), so no second
copy of the model is held. The implicit reward margin ``-((err_w - err_l) - (ref_err_w - ref_err_l))``
is positive when the model prefers the winner more than the base does.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from itertools import combinations
from typing import Any, Sequence

import pyarrow as pa

from lift_core.t2v.align import RewardAlignRecipe
from lift_core.train import DataOrder, TrainModel, WorkerContext


def preference_pairs(samples: Sequence[dict[str, Any]], min_gap: float) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``[{winner, loser, gap}]`` (sample indices) from generated videos of the same caption, and counts.

    A caption with one video, or rewards closer than ``min_gap``, gives no pair."""
    by_caption: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if s["source"] == "generated":
            by_caption[s["caption"]].append(i)
    pairs, dropped = [], 0
    for caption in sorted(by_caption):
        for i, j in combinations(by_caption[caption], 2):
            gap = abs(samples[i]["reward"] - samples[j]["reward"])
            if gap < min_gap or gap == 0:
                dropped += 1
                continue
            win, lose = (i, j) if samples[i]["reward"] > samples[j]["reward"] else (j, i)
            pairs.append({"winner": win, "loser": lose, "gap": gap})
    counts = {"pairs": len(pairs), "pairs_below_min_gap": dropped,
              "prompts_with_one_video": sum(1 for v in by_caption.values() if len(v) == 1)}
    return pairs, counts


@contextmanager
def adapters_disabled(module: Any):
    """The frozen base: every LoRA adapter of ``module`` off for the duration."""
    inner = getattr(module, "module", module)
    inner.disable_adapters()
    try:
        yield inner
    finally:
        inner.enable_adapters()


def dpo_loss(err: Any, ref_err: Any, beta: float) -> tuple[Any, Any]:
    """(per-pair loss, implicit reward margin) from ``[2P]`` errors laid out winners first, then losers."""
    import torch.nn.functional as F

    p = err.shape[0] // 2
    model_diff = err[:p] - err[p:]
    ref_diff = ref_err[:p] - ref_err[p:]
    margin = -(model_diff - ref_diff)
    return -F.logsigmoid(0.5 * beta * margin), margin


class DiffusionDpoRecipe(RewardAlignRecipe):
    """Diffusion-DPO on the same model, cache, loop and checkpoints as the reward-weighted recipe."""

    log_columns = [
        ("loss", pa.float64()),  # mean DPO loss over the global batch of pairs
        ("margin", pa.float64()),  # mean implicit reward margin (winner over loser, relative to the base)
        ("pair_accuracy", pa.float64()),  # share of pairs with a positive margin
    ]

    def build(self, ctx: WorkerContext) -> TrainModel:
        if ctx.cfg.align.mode != "lora":
            raise ValueError("align.objective=dpo needs align.mode=lora: the reference is the adapter switched off")
        model = super().build(ctx)
        model.handles["order"] = DataOrder(len(ctx.config["pairs"]), ctx.settings.seed)
        return model

    def make_batch(self, ctx: WorkerContext, model: TrainModel, positions: Sequence[int]) -> Any:
        """Winners then losers; each pair's two videos share the seed, hence the noise and the timestep."""
        from lift_core.t2v.loss import sample_seed

        h, samples, pairs = model.handles, ctx.config["samples"], ctx.config["pairs"]
        chosen = [pairs[h["order"](p)] for p in positions]
        rows = [samples[c["winner"]] for c in chosen] + [samples[c["loser"]] for c in chosen]
        seeds = [sample_seed(ctx.settings.seed, p) for p in positions] * 2
        return self.encode_rows(ctx, model, rows, seeds)

    def normalizer(self, batch: Any) -> float:
        return float(batch.rewards.shape[0] // 2)  # the mean is over pairs

    def loss(self, ctx: WorkerContext, model: TrainModel, net: Any, batch: Any) -> tuple[Any, dict[str, Any]]:
        import torch

        from lift_core.t2v.loss import per_sample_loss

        spec, pipe = model.handles["spec"], model.handles["pipe"]
        with torch.no_grad(), adapters_disabled(model.module) as base:
            ref_err = per_sample_loss(spec, pipe, base, batch)
        err = per_sample_loss(spec, pipe, net, batch)
        losses, margin = dpo_loss(err, ref_err, ctx.cfg.align.dpo.beta)
        return losses.sum(), {"loss": losses.sum(), "margin": margin.sum(), "correct": (margin > 0).sum(),
                              "pairs": float(losses.shape[0])}

    def log_row(self, stats: dict[str, float]) -> dict[str, float]:
        n = stats["pairs"]
        return {"loss": stats["loss"] / n, "margin": stats["margin"] / n, "pair_accuracy": stats["correct"] / n}
