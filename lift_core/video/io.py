"""Video I/O: decord first, PyAV as fallback, behind one function; an mp4 writer on PyAV's libx264.

``read_video`` samples K frames uniformly over the clip (LiFT's ``np.linspace`` sampling) and resizes
while decoding. Every failure (missing, empty, truncated, not a video) raises ``VideoDecodeError``
with a one-line reason, so callers can quarantine the input and go on.
"""

from __future__ import annotations

import io
import os
import platform
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO

import numpy as np

BACKENDS = ("auto", "decord", "pyav")


class VideoDecodeError(RuntimeError):
    """The input is missing, empty, truncated or not a video."""


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 [K, H, W, 3]
    frame_indices: list[int]  # indices into the source clip
    num_frames_total: int
    fps: float


def _has_decord() -> bool:
    # decord wheels exist for x86_64 Linux only; elsewhere PyAV does the work.
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    try:
        import decord  # noqa: F401
    except Exception:
        return False
    return True


HAS_DECORD = _has_decord()


def uniform_indices(num_total: int, k: int) -> list[int]:
    """LiFT's sampling: K indices spread uniformly over the clip, both ends included.

    Exactly VILA's ``opencv_extract_frames`` that LiFT-Critic calls:
    ``np.linspace(0, frame_count - 1, num_frames, dtype=int)`` (truncated, not rounded).
    A clip shorter than K repeats frames, so every video yields exactly K frames.
    """
    if num_total <= 0:
        raise VideoDecodeError("video has no frames")
    if k <= 0:
        raise ValueError(f"num_frames must be positive, got {k}")
    return [int(i) for i in np.linspace(0, num_total - 1, k, dtype=int)]


_LOG_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def _short(err: BaseException) -> str:
    """First line of a decoder error, without decord's ``[time] file.cc:line:`` prefixes."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = _LOG_PREFIX.sub("", text)
    return text[:160]


def _open_source(uri_or_bytes: str | bytes | os.PathLike) -> tuple[str | BinaryIO, str]:
    """A local path (decoders stream it) or an in-memory file (remote URIs are read to bytes first)."""
    if isinstance(uri_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(uri_or_bytes)
        if not data:
            raise VideoDecodeError("zero-byte input")
        return io.BytesIO(data), "<bytes>"
    uri = os.fspath(uri_or_bytes)
    from lift_core import storage

    local = storage.local_path(uri)
    if local is not None:
        try:
            st = os.stat(local)
        except FileNotFoundError:
            raise VideoDecodeError(f"file not found: {uri}") from None
        except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
            raise VideoDecodeError(f"cannot read {uri}: {getattr(err, 'strerror', None) or err}") from None
        size = st.st_size
        if os.path.isdir(local):
            raise VideoDecodeError(f"is a directory, not a video: {uri}")
        # A decoder opening a FIFO or a device would wait, or read, forever.
        if kind := storage.non_regular_kind(st.st_mode):
            raise VideoDecodeError(f"not a regular file ({kind}): {uri}")
        if size == 0:
            raise VideoDecodeError(f"zero-byte file: {uri}")
        return local, uri
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise VideoDecodeError(f"file not found: {uri}") from None
    except IsADirectoryError:
        raise VideoDecodeError(f"is a directory, not a video: {uri}") from None
    except OSError as err:
        raise VideoDecodeError(f"cannot read {uri}: {err}") from None
    if not data:
        raise VideoDecodeError(f"zero-byte file: {uri}")
    return io.BytesIO(data), uri


def _rewind(src: str | BinaryIO) -> str | BinaryIO:
    if not isinstance(src, str):
        src.seek(0)
    return src


def _decode_decord(src: str | BinaryIO, k: int | None, height: int, width: int) -> DecodedVideo:
    import decord

    # decord fails at some native widths unless width/height are passed (PROBES.md), so always pass them.
    try:
        vr = decord.VideoReader(src, width=width, height=height, num_threads=1)
    except Exception as err:  # decord raises DECORDError or RuntimeError
        raise VideoDecodeError(f"not a decodable video (decord: {_short(err)})") from None
    total = len(vr)
    idx = uniform_indices(total, k) if k else list(range(total))
    try:
        frames = vr.get_batch(idx).asnumpy()
        fps = float(vr.get_avg_fps() or 0.0)
    except Exception as err:
        raise VideoDecodeError(f"truncated or corrupt video (decord: {_short(err)})") from None
    finally:
        del vr
    return DecodedVideo(np.ascontiguousarray(frames, dtype=np.uint8), idx, total, fps)


def _count_packets(src: str | BinaryIO) -> int:
    import av

    with av.open(_rewind(src), mode="r") as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size)


def _decode_pyav(src: str | BinaryIO, k: int | None, height: int, width: int) -> DecodedVideo:
    import av

    try:
        with av.open(_rewind(src), mode="r") as container:
            if not container.streams.video:
                raise VideoDecodeError("no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 0.0)
            declared = int(stream.frames or 0)
        # The container's frame count lets us convert only the sampled frames (memory stays flat).
        total = declared or _count_packets(src)
        idx = uniform_indices(total, k) if k else list(range(total))
        wanted: dict[int, list[int]] = {}
        for pos, i in enumerate(idx):
            wanted.setdefault(i, []).append(pos)
        out: list[Any] = [None] * len(idx)
        last = max(idx)
        with av.open(_rewind(src), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            n = -1
            for n, frame in enumerate(container.decode(stream)):
                if n in wanted:
                    rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
                    for pos in wanted[n]:
                        out[pos] = rgb
                if n >= last:
                    break
    except VideoDecodeError:
        raise
    except Exception as err:
        raise VideoDecodeError(f"not a decodable video (pyav: {type(err).__name__}: {_short(err)})") from None
    if n < last:
        raise VideoDecodeError(f"truncated video: the container declares {total} frames, decoded {n + 1}")
    return DecodedVideo(np.stack(out).astype(np.uint8, copy=False), idx, total, fps)


def read_video(
    uri_or_bytes: str | bytes | os.PathLike,
    num_frames: int | None = 8,
    height: int = 224,
    width: int = 224,
    backend: str = "auto",
) -> DecodedVideo:
    """Decode ``num_frames`` uniformly sampled frames (all frames when None), resized to ``height x width``.

    ``backend="auto"`` uses decord where it exists and falls back to PyAV when decord cannot read
    the input; ``"decord"`` / ``"pyav"`` force one. Raises ``VideoDecodeError`` for any bad input.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    src, _ = _open_source(uri_or_bytes)
    if backend == "pyav" or (backend == "auto" and not HAS_DECORD):
        return _decode_pyav(src, num_frames, height, width)
    try:
        return _decode_decord(src, num_frames, height, width)
    except VideoDecodeError as decord_err:
        if backend == "decord":
            raise
        try:
            return _decode_pyav(src, num_frames, height, width)
        except VideoDecodeError:
            raise decord_err from None


def encode_mp4(frames: np.ndarray, fps: int = 8, crf: int = 18) -> bytes:  # crf: the constant QP
    """H.264 mp4 bytes from uint8 [T, H, W, 3]; H and W must be even (yuv420p). Same frames -> same bytes."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be uint8 [T>0,H,W,3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"frame sides must be even for yuv420p, got {h}x{w}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(int(fps), 1))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # Deterministic bytes for the same frames, across processes too: one thread and no adaptive
        # decisions. x264's lookahead, mbtree, AQ, scenecut and B-frame choices differ between
        # processes even single-threaded (measured: ~1 in 8 videos), so quality is a constant QP.
        stream.options = {
            "qp": str(crf), "preset": "veryfast", "threads": "1",
            "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0:aq-mode=0:rc-lookahead=0"
                           ":scenecut=0:bframes=0:weightp=0",
        }
        stream.thread_count = 1
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def write_mp4(path_or_uri: str | os.PathLike, frames: np.ndarray, fps: int = 8) -> str:
    """Write an H.264 mp4 (atomically, through fsspec) and return its URI."""
    from lift_core import storage

    uri = os.fspath(path_or_uri)
    storage.write_bytes_atomic(uri, encode_mp4(frames, fps))
    return uri


__all__ = ["DecodedVideo", "HAS_DECORD", "VideoDecodeError", "encode_mp4", "read_video", "uniform_indices", "write_mp4"]
