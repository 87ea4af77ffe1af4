from __future__ import annotations

import numpy as np
import pytest

from lift_core.video.io import HAS_DECORD, VideoDecodeError, encode_mp4, read_video, uniform_indices


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_real_fixture_uniform_sampling(fixtures_dir, backend):
    v = read_video(str(fixtures_dir / "lift-demo/0.mp4"), num_frames=8, height=56, width=56, backend=backend)
    assert v.frames.shape == (8, 56, 56, 3) and v.frames.dtype == np.uint8
    assert v.num_frames_total == 49 and v.fps == pytest.approx(8.0)
    assert v.frame_indices == [0, 7, 14, 21, 27, 34, 41, 48]
    assert v.frames.std() > 5  # real content, not a blank frame


def test_backends_agree(fixtures_dir):
    if not HAS_DECORD:
        pytest.skip("decord has x86_64 Linux wheels only")
    a = read_video(str(fixtures_dir / "lift-demo/1.mp4"), 4, 64, 96, backend="decord").frames.astype(int)
    b = read_video(str(fixtures_dir / "lift-demo/1.mp4"), 4, 64, 96, backend="pyav").frames.astype(int)
    assert np.abs(a - b).mean() < 12  # different scalers, same pictures


@pytest.mark.parametrize("width", [16, 24, 48, 72])
def test_decord_native_widths_that_break_without_size(width):
    frames = np.random.RandomState(0).randint(0, 255, (5, 32, width, 3)).astype(np.uint8)
    v = read_video(encode_mp4(frames), num_frames=5, height=32, width=width)
    assert v.frames.shape == (5, 32, width, 3)


def test_writer_roundtrip_and_determinism():
    frames = np.zeros((9, 32, 32, 3), np.uint8)
    frames[:, 8:24, 8:24] = (200, 30, 30)
    data = encode_mp4(frames, fps=8)
    assert data == encode_mp4(frames, fps=8)
    back = read_video(data, num_frames=None, height=32, width=32)
    assert back.frames.shape == (9, 32, 32, 3) and back.fps == pytest.approx(8.0)
    assert np.abs(back.frames.astype(int) - frames.astype(int)).mean() < 6
    with pytest.raises(ValueError, match="even"):
        encode_mp4(np.zeros((3, 31, 32, 3), np.uint8))


def test_bad_inputs_raise_clear_errors(tmp_path, fixtures_dir):
    good = (fixtures_dir / "lift-demo/1.mp4").read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video")
    (tmp_path / "trunc.mp4").write_bytes(good[: len(good) // 3])
    for name, match in [("empty.mp4", "zero-byte"), ("text.mp4", "not a decodable video"),
                        ("trunc.mp4", "video"), ("missing.mp4", "file not found")]:
        with pytest.raises(VideoDecodeError, match=match):
            read_video(str(tmp_path / name), 8, 56, 56)


def test_uniform_indices():
    assert uniform_indices(49, 8) == [0, 7, 14, 21, 27, 34, 41, 48]
    assert uniform_indices(3, 8) == [0, 0, 1, 1, 1, 1, 2, 2]
    with pytest.raises(VideoDecodeError):
        uniform_indices(0, 8)
