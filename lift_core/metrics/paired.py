"""Paired comparisons of two models on the same prompts and seeds, with bootstrap confidence intervals.

Pairs of one prompt share its caption (several seeds each), so they are not independent: the bootstrap
resamples prompts (a cluster bootstrap), taking all of a drawn prompt's pairs, and the 95% interval is
the 2.5th to 97.5th percentile of the statistic over the resamples.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import numpy as np


def win_rate(aligned: np.ndarray, base: np.ndarray) -> float:
    """Share of pairs where aligned > base; ties count half."""
    aligned, base = np.asarray(aligned, float), np.asarray(base, float)
    if aligned.shape != base.shape or aligned.size == 0:
        raise ValueError(f"need paired, non-empty scores, got {aligned.shape} and {base.shape}")
    return float(np.mean((aligned > base) + 0.5 * (aligned == base)))


def mean_delta(aligned: np.ndarray, base: np.ndarray) -> float:
    return float(np.mean(np.asarray(aligned, float) - np.asarray(base, float)))


def bootstrap_ci(statistic: Callable[[np.ndarray, np.ndarray], float], aligned: Sequence[float],
                 base: Sequence[float], clusters: Sequence[Hashable], n_resamples: int = 2000,
                 seed: int = 0) -> list[float]:
    """``[lo, hi]``: the 95% cluster-bootstrap interval of ``statistic(aligned, base)`` over paired values."""
    aligned, base = np.asarray(aligned, float), np.asarray(base, float)
    labels = np.asarray([str(c) for c in clusters])
    if not (aligned.shape == base.shape == labels.shape) or aligned.size == 0:
        raise ValueError("need paired, non-empty values with one cluster label each")
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        stats[i] = statistic(aligned[idx], base[idx])
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]
