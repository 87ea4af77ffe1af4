"""Video I/O: decord first, PyAV as fallback, behind one function; an mp4 writer on PyAV's libx264."""

from __future__ import annotations

import io
import os
import platform
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


class VideoDecodeError(RuntimeError):
    """The input is missing, empty, truncated or not a video."""


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 [K, H, W, 3]
    frame_indices: list[int]
    num_frames_total: int
    fps: float


def _has_decord() -> bool:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    try:
        import decord  # noqa: F401
    except Exception:
        return False
    return True


HAS_DECORD = _has_decord()


def uniform_indices(num_total: int, k: int) -> list[int]:
    """LiFT's sampling: K indices spread uniformly over the clip, ends included."""
    if num_total <= 0:
        raise VideoDecodeError("video has no frames")
    return [int(round(x)) for x in np.linspace(0, num_total - 1, k)]


def _load_bytes(source: str | bytes | os.PathLike) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        from lift_core import storage

        uri = os.fspath(source)
        try:
            data = storage.read_bytes(uri)
        except FileNotFoundError:
            raise VideoDecodeError(f"file not found: {uri}") from None
        except IsADirectoryError:
            raise VideoDecodeError(f"is a directory, not a video: {uri}") from None
    if not data:
        raise VideoDecodeError("zero-byte file")
    return data


def _decode_decord(data: bytes, k: int | None, height: int, width: int) -> DecodedVideo:
    import decord

    # decord fails at some native widths unless width/height are passed (PROBES.md).
    try:
        vr = decord.VideoReader(io.BytesIO(data), width=width, height=height, num_threads=1)
    except Exception as err:  # decord raises DECORDError or RuntimeError
        raise VideoDecodeError(f"not a decodable video ({str(err).splitlines()[0][:200]})") from None
    total = len(vr)
    idx = uniform_indices(total, k) if k else list(range(total))
    try:
        frames = vr.get_batch(idx).asnumpy()
    except Exception as err:
        raise VideoDecodeError(f"truncated or corrupt video ({str(err).splitlines()[0][:200]})") from None
    fps = float(vr.get_avg_fps() or 0.0)
    return DecodedVideo(frames.astype(np.uint8, copy=False), idx, total, fps)


def _decode_pyav(data: bytes, k: int | None, height: int, width: int) -> DecodedVideo:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 0.0)
            decoded = [f.to_ndarray(format="rgb24", width=width, height=height) for f in container.decode(stream)]
    except Exception as err:
        raise VideoDecodeError(f"not a decodable video ({type(err).__name__}: {str(err)[:200]})") from None
    total = len(decoded)
    idx = uniform_indices(total, k) if k else list(range(total))
    return DecodedVideo(np.stack([decoded[i] for i in idx]).astype(np.uint8), idx, total, fps)


def read_video(
    source: str | bytes | os.PathLike,
    num_frames: int | None = 8,
    height: int = 224,
    width: int = 224,
    backend: str = "auto",
) -> DecodedVideo:
    """Decode ``num_frames`` uniformly sampled frames (all frames when None), resized to H x W."""
    data = _load_bytes(source)
    use_decord = backend == "decord" or (backend == "auto" and HAS_DECORD)
    if use_decord:
        return _decode_decord(data, num_frames, height, width)
    return _decode_pyav(data, num_frames, height, width)


def encode_mp4(frames: np.ndarray, fps: int = 8, crf: int = 18) -> bytes:
    """H.264 mp4 bytes from uint8 [T, H, W, 3]; H and W must be even (yuv420p)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"frame sides must be even for yuv420p, got {h}x{w}")
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(int(fps), 1))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # Deterministic bytes for the same frames: one thread, fixed options.
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        stream.thread_count = 1
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def write_mp4(uri: str | os.PathLike, frames: np.ndarray, fps: int = 8) -> str:
    """Write an mp4 (atomically, through fsspec) and return its URI."""
    from lift_core import storage

    storage.write_bytes_atomic(os.fspath(uri), encode_mp4(frames, fps))
    return os.fspath(uri)
