"""read_video / write_mp4 on the real 480x720 fixtures, synthetic clips and every kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest

import lift_core.video.io as vio
from lift_core import storage
from lift_core.video.io import HAS_DECORD, VideoDecodeError, encode_mp4, read_video, uniform_indices, write_mp4


@pytest.mark.parametrize("backend", ["auto", "pyav"] + (["decord"] if HAS_DECORD else []))
def test_real_fixture_uniform_sampling(fixtures_dir, backend):
    v = read_video(str(fixtures_dir / "lift-demo/0.mp4"), num_frames=8, height=56, width=56, backend=backend)
    assert v.frames.shape == (8, 56, 56, 3) and v.frames.dtype == np.uint8
    assert v.num_frames_total == 49 and v.fps == pytest.approx(8.0)
    # LiFT's np.linspace(0, 48, 8, dtype=int).
    assert v.frame_indices == [0, 6, 13, 20, 27, 34, 41, 48]
    assert v.frames.std() > 5  # real content, not a blank frame


def test_backends_agree(fixtures_dir):
    if not HAS_DECORD:
        pytest.skip("decord has x86_64 Linux wheels only")
    a = read_video(str(fixtures_dir / "lift-demo/1.mp4"), 4, 64, 96, backend="decord").frames.astype(int)
    b = read_video(str(fixtures_dir / "lift-demo/1.mp4"), 4, 64, 96, backend="pyav").frames.astype(int)
    assert np.abs(a - b).mean() < 12  # different scalers, same pictures
    # The frames differ along the clip: sampling really moves through it.
    assert np.abs(a[0] - a[-1]).mean() > 3


@pytest.mark.parametrize("width", [16, 24, 48, 72])
def test_decord_native_widths_that_break_without_size(width):
    frames = np.random.RandomState(0).randint(0, 255, (5, 32, width, 3)).astype(np.uint8)
    v = read_video(encode_mp4(frames), num_frames=5, height=32, width=width)
    assert v.frames.shape == (5, 32, width, 3)


def test_all_frames_and_resize_from_bytes_and_remote_uri(fixtures_dir):
    data = (fixtures_dir / "lift-demo/1.mp4").read_bytes()
    every = read_video(data, num_frames=None, height=24, width=36)
    assert every.frames.shape == (49, 24, 36, 3) and every.frame_indices == list(range(49))
    # Remote (fsspec) URIs are read to bytes first.
    storage.write_bytes_atomic("memory://lift-io-test/1.mp4", data)
    remote = read_video("memory://lift-io-test/1.mp4", num_frames=3, height=24, width=36)
    assert remote.frame_indices == [0, 24, 48]
    assert np.array_equal(remote.frames, every.frames[[0, 24, 48]])


def test_writer_roundtrip_and_determinism(tmp_path):
    frames = np.zeros((9, 32, 32, 3), np.uint8)
    frames[:, 8:24, 8:24] = (200, 30, 30)
    data = encode_mp4(frames, fps=8)
    assert data == encode_mp4(frames, fps=8)
    uri = write_mp4(tmp_path / "sub" / "a.mp4", frames, fps=8)
    assert (tmp_path / "sub" / "a.mp4").read_bytes() == data and uri.endswith("a.mp4")
    back = read_video(uri, num_frames=None, height=32, width=32)
    assert back.frames.shape == (9, 32, 32, 3) and back.fps == pytest.approx(8.0)
    assert np.abs(back.frames.astype(int) - frames.astype(int)).mean() < 6
    with pytest.raises(ValueError, match="even"):
        encode_mp4(np.zeros((3, 31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(np.zeros((3, 32, 32, 3), np.float32))


_ENCODE_SYNTH = """
import hashlib, sys
import numpy as np
from lift_core.video import synth
from lift_core.video.io import encode_mp4
rng = np.random.RandomState(0)
for i in range(36):
    spec = synth.sample_spec(rng, levels=(i % 3, (i // 3) % 3, (i // 9) % 3))
    print(hashlib.sha256(encode_mp4(synth.render(spec, 64, 64, 17, seed=i), 8)).hexdigest())
"""


def test_writer_is_deterministic_across_processes():
    # x264's adaptive decisions once differed between processes for ~1 video in 8: content ids
    # (and so splits and caches) must not depend on which process encoded a video.
    import subprocess
    import sys

    runs = [subprocess.run([sys.executable, "-c", _ENCODE_SYNTH], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert len(runs[0].split()) == 36 and runs[0] == runs[1]


@pytest.mark.parametrize("backend", ["auto", "pyav"] + (["decord"] if HAS_DECORD else []))
def test_bad_inputs_raise_clear_errors(bad_videos, backend):
    expected = {
        "zero": "zero-byte",
        "text": "not a decodable video",
        "trunc_head": "not a decodable video",
        "trunc_tail": "truncated|corrupt|not a decodable",
        "missing": "file not found",
    }
    for name, match in expected.items():
        with pytest.raises(VideoDecodeError, match=match) as info:
            read_video(str(bad_videos[name]), 8, 56, 56, backend=backend)
        assert "\n" not in str(info.value) and len(str(info.value)) < 300  # one clear line
    with pytest.raises(VideoDecodeError, match="zero-byte"):
        read_video(b"", 8, 56, 56, backend=backend)


def test_auto_falls_back_to_pyav_when_decord_fails(monkeypatch, fixtures_dir):
    if not HAS_DECORD:
        pytest.skip("without decord, auto is PyAV already")

    def broken(*_args, **_kw):
        raise VideoDecodeError("not a decodable video (decord: simulated)")

    monkeypatch.setattr(vio, "_decode_decord", broken)
    v = read_video(str(fixtures_dir / "lift-demo/0.mp4"), 4, 32, 48, backend="auto")
    assert v.frames.shape == (4, 32, 48, 3)
    with pytest.raises(VideoDecodeError, match="simulated"):
        read_video(str(fixtures_dir / "lift-demo/0.mp4"), 4, 32, 48, backend="decord")


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        read_video(b"x", 8, 56, 56, backend="opencv")
    with pytest.raises(ValueError, match="positive"):
        read_video(b"x", 8, 0, 56)


def test_uniform_indices():
    # VILA's opencv_extract_frames (LiFT-Critic): np.linspace(0, n - 1, k, dtype=int).
    assert uniform_indices(49, 8) == [0, 6, 13, 20, 27, 34, 41, 48]
    assert uniform_indices(17, 8) == [0, 2, 4, 6, 9, 11, 13, 16]
    assert uniform_indices(3, 8) == [0, 0, 0, 0, 1, 1, 1, 2]  # short clips repeat frames
    assert uniform_indices(1, 1) == [0]
    with pytest.raises(VideoDecodeError):
        uniform_indices(0, 8)
