"""AdamW and learning-rate schedules: linear warmup, then constant or cosine decay to 0."""

from __future__ import annotations

import math
from typing import Any, Callable


def lr_lambda(warmup: int, total: int, schedule: str) -> Callable[[int], float]:
    """Multiplier of the base LR at ``step``: linear warmup over ``warmup`` steps, then constant or cosine."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be constant or cosine, got {schedule!r}")

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def delayed(start: int, warmup: int, total: int, schedule: str) -> Callable[[int], float]:
    """A group frozen (LR 0) until ``start``, then its own warmup and decay over the remaining steps."""
    start = min(start, max(0, total - 1))
    late = lr_lambda(warmup, total - start, schedule)
    return lambda step: 0.0 if step < start else late(step - start)


def make_optimizer(param_groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], weight_decay: float):
    """AdamW over the recipe's groups; a group's own ``lr``/``weight_decay`` override the run's."""
    import torch

    groups = [{k: v for k, v in g.items() if k != "start_step"} for g in param_groups]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def make_scheduler(optimizer: Any, param_groups: list[dict[str, Any]], warmup: int, total: int, schedule: str):
    """One ``LambdaLR`` for all groups; a group with ``start_step`` is delayed (``delayed``)."""
    import torch

    lambdas = [delayed(g.get("start_step", 0), max(0, warmup), total, schedule) if g.get("start_step")
               else lr_lambda(max(0, warmup), total, schedule) for g in param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
