"""Shared inputs of the video tests: every kind of bad video file next to the two real ones."""

from __future__ import annotations

from pathlib import Path

import pytest


def _faststart_copy(src: Path, dst: Path) -> None:
    """Remux with the index (moov) first, so a truncated copy still opens and fails mid-stream."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = inp.streams.video[0]
        o = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = o
            out.mux(packet)


@pytest.fixture(scope="session")
def bad_videos(tmp_path_factory, fixtures_dir) -> dict[str, Path]:
    """name -> path: ``zero`` (empty), ``text`` (not a video), ``trunc_head`` (first 4 kB: no index),
    ``trunc_tail`` (index first, cut in the middle of the frames), ``missing`` (no file)."""
    root = tmp_path_factory.mktemp("bad-videos")
    good = fixtures_dir / "lift-demo/1.mp4"
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    (root / "trunc_head.mp4").write_bytes(good.read_bytes()[:4000])
    _faststart_copy(good, root / "faststart.mp4")
    data = (root / "faststart.mp4").read_bytes()
    (root / "trunc_tail.mp4").write_bytes(data[: len(data) // 2])
    return {
        "zero": root / "zero.mp4",
        "text": root / "text.mp4",
        "trunc_head": root / "trunc_head.mp4",
        "trunc_tail": root / "trunc_tail.mp4",
        "missing": root / "missing.mp4",
    }
