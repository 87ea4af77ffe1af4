"""Weight-free video quality metrics.

``temporal_flickering`` is VBench's "temporal flickering" dimension, which needs no model: the mean
absolute difference between consecutive frames (uint8, all channels), mapped to [0, 1] as
``(255 - mean_MAE) / 255``. 1.0 is a perfectly static video; flicker and abrupt changes lower it.
VBench averages the per-video scores over a set of videos (``mean_temporal_flickering``).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def frame_mae_sequence(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference of each pair of consecutive frames: ``[T-1]`` in [0, 255]."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise ValueError(f"frames must be uint8 [T, H, W, C], got {arr.dtype} {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"temporal flickering needs at least 2 frames, got {arr.shape[0]}")
    a = arr.astype(np.int16)
    return np.abs(a[1:] - a[:-1]).reshape(arr.shape[0] - 1, -1).mean(axis=1)


def temporal_flickering(frames: np.ndarray) -> float:
    """VBench's per-video temporal flickering score ``(255 - mean MAE) / 255`` (higher is steadier)."""
    return float((255.0 - float(frame_mae_sequence(frames).mean())) / 255.0)


def mean_temporal_flickering(videos: Iterable[np.ndarray]) -> float:
    """The mean of the per-video scores (VBench's dimension score for a set of videos)."""
    scores = [temporal_flickering(v) for v in videos]
    if not scores:
        raise ValueError("no videos to score")
    return float(np.mean(scores))


__all__ = ["frame_mae_sequence", "mean_temporal_flickering", "temporal_flickering"]
