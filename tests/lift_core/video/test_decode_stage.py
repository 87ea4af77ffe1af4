"""The Ray Data decode stage on the real 480x720 fixtures plus every kind of bad input."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from lift_core import storage
from lift_core.config import DecodeConfig
from lift_core.schemas import MANIFEST_SCHEMA, QUARANTINE_SCHEMA, rows_to_table
from lift_core.video.decode_stage import decode_manifest
from lift_core.video.frames import read_frames
from lift_core.video.io import read_video

BAD = ("zero", "text", "trunc_head", "trunc_tail", "missing")


@pytest.fixture()
def ids(fixtures_dir, bad_videos) -> dict[str, str]:
    """Each test video's content id (a manifest row's video_id is checked against its file's content)."""
    paths = {"good0": fixtures_dir / "lift-demo/0.mp4", "good1": fixtures_dir / "lift-demo/1.mp4", **bad_videos}
    return {name: storage.content_id(str(p)) if p.exists() else name for name, p in paths.items()}


@pytest.fixture()
def messy_manifest(tmp_path, fixtures_dir, bad_videos, ids):
    rows = [
        {"video_id": ids["good0"], "uri": str(fixtures_dir / "lift-demo/0.mp4")},
        {"video_id": ids["good1"], "uri": str(fixtures_dir / "lift-demo/1.mp4")},
        *[{"video_id": ids[name], "uri": str(bad_videos[name])} for name in BAD],
        {"video_id": ids["good0"], "uri": str(fixtures_dir / "lift-demo/0.mp4")},  # a repeated row
        {"video_id": None, "uri": str(fixtures_dir / "lift-demo/1.mp4")},  # not a manifest row
    ]
    uri = str(tmp_path / "manifest.parquet")
    storage.write_table(
        uri, rows_to_table([{**r, "caption": "c", "source": "t", "split": "train"} for r in rows], MANIFEST_SCHEMA)
    )
    return uri


def test_decode_real_videos_and_quarantine_bad_ones(ray_session, tmp_path, messy_manifest, fixtures_dir, ids):
    res = decode_manifest(messy_manifest, str(tmp_path / "out"), DecodeConfig(frames=8, height=56, width=56, batch_size=2))
    assert res["counts"] == {"videos": 7, "decoded": 2, "quarantined": 6, "resumed": 0, "duplicate_rows": 1}
    frames = read_frames(res["outputs"]["frames"])
    assert set(frames) == {ids["good0"], ids["good1"]}
    # The stage's frames are exactly what read_video gives (LiFT's sampling, resized on decode).
    direct = read_video(str(fixtures_dir / "lift-demo/1.mp4"), 8, 56, 56)
    assert (frames[ids["good1"]] == direct.frames).all()
    meta = {r["video_id"]: r for r in pq.read_table(res["outputs"]["frames"]).select(
        ["video_id", "frame_indices", "num_frames_total", "fps", "height", "width"]).to_pylist()}
    assert meta[ids["good0"]]["frame_indices"] == [0, 6, 13, 20, 27, 34, 41, 48]
    assert (meta[ids["good0"]]["num_frames_total"], meta[ids["good0"]]["height"], meta[ids["good0"]]["width"]) == (49, 56, 56)

    q = pq.read_table(res["outputs"]["quarantine"])
    assert q.schema.equals(QUARANTINE_SCHEMA)
    errors = {r["video_id"]: r["error"] for r in q.to_pylist()}
    assert set(errors) == {*(ids[b] for b in BAD), None}
    assert "zero-byte" in errors[ids["zero"]] and "file not found" in errors[ids["missing"]]
    assert "not a decodable video" in errors[ids["text"]]
    assert "without uri or video_id" in errors[None]
    assert all(r["stage"] == "decode" and r["uri"] for r in q.to_pylist())


def test_decode_resumes_from_written_shards(ray_session, tmp_path, messy_manifest):
    out = str(tmp_path / "out")
    params = DecodeConfig(frames=4, height=32, width=48, batch_size=1)
    first = decode_manifest(messy_manifest, out, params)
    shards = sorted((tmp_path / "out/frames").glob("*.parquet"))
    assert len(shards) == 2
    kept = shards[1].stat().st_mtime_ns
    shards[0].unlink()  # as if the run crashed before that shard was written
    again = decode_manifest(messy_manifest, out, params)
    assert again["counts"]["resumed"] == 1 and again["counts"]["decoded"] == 2
    assert shards[1].stat().st_mtime_ns == kept  # the finished shard was not redone
    assert set(read_frames(again["outputs"]["frames"])) == set(read_frames(first["outputs"]["frames"]))
    # Resuming into the folder with other decode settings would mix shapes: refused.
    with pytest.raises(ValueError, match="decoded with"):
        decode_manifest(messy_manifest, out, DecodeConfig(frames=8, height=32, width=48))


def test_not_a_manifest(ray_session, tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        decode_manifest(str(tmp_path / "nope.parquet"), str(tmp_path / "out"), DecodeConfig())
    storage.write_table(str(tmp_path / "q.parquet"), rows_to_table([], QUARANTINE_SCHEMA).drop_columns(["uri"]))
    with pytest.raises(ValueError, match="not a manifest"):
        decode_manifest(str(tmp_path / "q.parquet"), str(tmp_path / "out2"), DecodeConfig())
