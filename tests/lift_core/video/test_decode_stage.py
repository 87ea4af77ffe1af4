"""The Ray Data decode stage on real fixtures plus every kind of bad input."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from lift_core.config import DecodeConfig
from lift_core.schemas import MANIFEST_SCHEMA, rows_to_table
from lift_core import storage
from lift_core.video.decode_stage import decode_manifest
from lift_core.video.frames import read_frames


@pytest.fixture()
def messy_manifest(tmp_path, fixtures_dir):
    good0, good1 = fixtures_dir / "lift-demo/0.mp4", fixtures_dir / "lift-demo/1.mp4"
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video at all")
    (tmp_path / "trunc.mp4").write_bytes(good1.read_bytes()[:4000])
    rows = [
        {"video_id": "good0", "uri": str(good0)},
        {"video_id": "good1", "uri": str(good1)},
        {"video_id": "zero", "uri": str(tmp_path / "zero.mp4")},
        {"video_id": "text", "uri": str(tmp_path / "text.mp4")},
        {"video_id": "trunc", "uri": str(tmp_path / "trunc.mp4")},
        {"video_id": "missing", "uri": str(tmp_path / "missing.mp4")},
    ]
    uri = str(tmp_path / "manifest.parquet")
    storage.write_table(uri, rows_to_table([{**r, "caption": "c", "source": "t", "split": "train"} for r in rows],
                                           MANIFEST_SCHEMA))
    return uri


def test_decode_real_videos_and_quarantine_bad_ones(ray_session, tmp_path, messy_manifest):
    res = decode_manifest(messy_manifest, str(tmp_path / "out"), DecodeConfig(frames=8, height=56, width=56,
                                                                               batch_size=2))
    assert res["counts"] == {"videos": 6, "decoded": 2, "quarantined": 4, "resumed": 0}
    frames = read_frames(res["outputs"]["frames"])
    assert set(frames) == {"good0", "good1"}
    assert frames["good0"].shape == (8, 56, 56, 3)
    q = pq.read_table(res["outputs"]["quarantine"]).to_pylist()
    errors = {r["video_id"]: r["error"] for r in q}
    assert set(errors) == {"zero", "text", "trunc", "missing"}
    assert "zero-byte" in errors["zero"] and "file not found" in errors["missing"]
    assert all(r["stage"] == "decode" for r in q)


def test_decode_resumes_from_written_shards(ray_session, tmp_path, messy_manifest):
    out = str(tmp_path / "out")
    first = decode_manifest(messy_manifest, out, DecodeConfig(frames=4, height=32, width=48, batch_size=1))
    shards = sorted((tmp_path / "out/frames").glob("*.parquet"))
    assert len(shards) == 2
    shards[0].unlink()  # as if the run crashed before that shard was written
    again = decode_manifest(messy_manifest, out, DecodeConfig(frames=4, height=32, width=48, batch_size=1))
    assert again["counts"]["resumed"] == 1 and again["counts"]["decoded"] == 2
    assert set(read_frames(again["outputs"]["frames"])) == set(read_frames(first["outputs"]["frames"]))
    shutil.rmtree(tmp_path / "out")
