"""VBench's weight-free temporal flickering: (255 - mean consecutive-frame MAE) / 255."""

from __future__ import annotations

import numpy as np
import pytest

from lift_core.metrics.video_quality import frame_mae_sequence, mean_temporal_flickering, temporal_flickering
from lift_core.video.io import read_video


def test_static_video_scores_one_and_known_differences_score_exactly():
    static = np.full((5, 8, 8, 3), 77, np.uint8)
    assert temporal_flickering(static) == 1.0
    # Frames alternate 0 / 51 on every pixel: MAE 51 between each pair -> (255 - 51) / 255 = 0.8.
    flick = np.zeros((4, 8, 8, 3), np.uint8)
    flick[1::2] = 51
    assert frame_mae_sequence(flick).tolist() == [51.0, 51.0, 51.0]
    assert temporal_flickering(flick) == pytest.approx(0.8)
    # uint8 wrap-around must not happen (255 -> 0 is a difference of 255, not 1).
    extreme = np.zeros((2, 4, 4, 3), np.uint8)
    extreme[0] = 255
    assert temporal_flickering(extreme) == 0.0
    assert mean_temporal_flickering([static, flick]) == pytest.approx(0.9)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_flickering(np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        temporal_flickering(np.zeros((3, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="no videos"):
        mean_temporal_flickering([])


def test_real_video_is_steadier_than_its_shuffled_frames(fixtures_dir):
    video = read_video(fixtures_dir / "lift-demo" / "0.mp4", num_frames=None, height=120, width=180).frames
    assert video.shape[0] == 49
    real = temporal_flickering(video)
    shuffled = temporal_flickering(video[np.random.default_rng(0).permutation(len(video))])
    assert 0.9 < real < 1.0 and shuffled < real
