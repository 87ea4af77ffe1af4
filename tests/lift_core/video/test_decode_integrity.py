"""The decode stage under damage (issue 18, findings 4 and 5).

A truncated or deleted frames shard is found and its videos decoded again, on a cache hit and on a
crash resume; a video with neither frames nor a decode quarantine row is an error, never a skip; a
full disk in a Ray worker stops the stage with one line naming the path, and leaves no temp shard.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lift_core import storage
from lift_core.config import DecodeConfig, PipelineConfig
from lift_core.schemas import MANIFEST_SCHEMA, rows_to_table
from lift_core.video.decode_stage import (
    MissingFramesError,
    decode_batch,
    decode_manifest,
    missing_frames_reasons,
    output_params,
    run_decode,
)
from lift_core.video.frames import read_frames, shard_files

REPO = Path(__file__).resolve().parents[3]
PARAMS = DecodeConfig(frames=4, height=32, width=48, batch_size=1)


@pytest.fixture()
def ids(fixtures_dir, bad_videos) -> dict[str, str]:
    """The test videos' content ids (a manifest row's video_id is checked against its file's content)."""
    paths = {"good0": fixtures_dir / "lift-demo/0.mp4", "good1": fixtures_dir / "lift-demo/1.mp4",
             "text": bad_videos["text"]}
    return {name: storage.content_id(str(p)) for name, p in paths.items()}


@pytest.fixture()
def manifest(tmp_path, fixtures_dir, bad_videos, ids) -> str:
    """Two good videos (one shard each at batch_size=1) and one that the decode stage quarantines."""
    rows = [
        {"video_id": ids["good0"], "uri": str(fixtures_dir / "lift-demo/0.mp4")},
        {"video_id": ids["good1"], "uri": str(fixtures_dir / "lift-demo/1.mp4")},
        {"video_id": ids["text"], "uri": str(bad_videos["text"])},
    ]
    uri = str(tmp_path / "manifest.parquet")
    storage.write_table(uri, rows_to_table([{**r, "caption": "c", "source": "t", "split": "test"} for r in rows],
                                           MANIFEST_SCHEMA))
    return uri


def config(tmp_path) -> PipelineConfig:
    return PipelineConfig(run_root=str(tmp_path / "runs"), decode=PARAMS)


def shard_of(frames_uri: str, video_id: str) -> Path:
    for uri in shard_files(frames_uri):
        if video_id in read_frames(uri):
            return Path(uri)
    raise AssertionError(f"no shard holds {video_id}")


def hidden_files(folder: str) -> list[str]:
    return [p.name for p in Path(folder).rglob(".*")]


# --------------------------------------------------------------------------- finding 4
def test_a_truncated_shard_is_decoded_again_instead_of_trusted(ray_session, tmp_path, manifest, ids, caplog):
    cfg = config(tmp_path)
    first = run_decode(cfg, manifest)
    frames = read_frames(first.outputs["frames"])
    shard = shard_of(first.outputs["frames"], ids["good1"])
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a crash or a full disk mid-copy

    with caplog.at_level(logging.WARNING):
        again = run_decode(cfg, manifest)
    assert again.key == first.key
    assert str(shard) in caplog.text  # the log names the shard and why it is not trusted
    assert again.counts["decoded"] == 2 and again.counts["resumed"] == 1 and again.counts["quarantined"] == 1
    repaired = read_frames(again.outputs["frames"])
    assert set(repaired) == {ids["good0"], ids["good1"]} and all(np.array_equal(repaired[v], frames[v]) for v in frames)
    # Repaired and marked again: the next run is a plain cache hit.
    success = Path(again.out_uri) / storage.SUCCESS_FILE
    mtime = success.stat().st_mtime_ns
    assert run_decode(cfg, manifest) == again and success.stat().st_mtime_ns == mtime


def test_a_deleted_shard_is_decoded_again_not_reported_as_quarantined(ray_session, tmp_path, manifest, ids):
    """The issue's case: the operator deletes a bad shard; the videos in it come back."""
    cfg = config(tmp_path)
    first = run_decode(cfg, manifest)
    shard_of(first.outputs["frames"], ids["good0"]).unlink()
    again = run_decode(cfg, manifest)
    assert set(read_frames(again.outputs["frames"])) == {ids["good0"], ids["good1"]}
    assert again.counts["decoded"] == 2 and again.counts["resumed"] == 1
    assert storage.load_success(again.out_uri) == again


def test_a_crash_resume_drops_an_unreadable_shard(ray_session, tmp_path, manifest, ids):
    out = str(tmp_path / "out")
    first = decode_manifest(manifest, out, PARAMS)
    shard = shard_of(first["outputs"]["frames"], ids["good0"])
    shard.write_bytes(b"PAR1 cut short")  # no _SUCCESS.json here: the resume itself must notice
    again = decode_manifest(manifest, out, PARAMS)
    assert again["counts"]["resumed"] == 1 and again["counts"]["decoded"] == 2
    assert set(read_frames(again["outputs"]["frames"])) == {ids["good0"], ids["good1"]}


def test_a_video_with_no_frames_and_no_quarantine_row_is_an_error(ray_session, tmp_path, manifest, ids):
    res = decode_manifest(manifest, str(tmp_path / "out"), PARAMS)
    frames = res["outputs"]["frames"]
    quarantined = [{"video_id": ids["text"], "uri": "/videos/text.mp4"}]
    reasons = missing_frames_reasons([frames], quarantined)
    assert reasons[ids["text"]].startswith("no decoded frames: the decode stage quarantined it (")
    assert "not a decodable video" in reasons[ids["text"]]

    shard_of(frames, ids["good1"]).unlink()  # lost after decode finished: no quarantine row explains it
    with pytest.raises(MissingFramesError, match=rf"1 video\(s\) .* e\.g\. {ids['good1']} .*rerun decode"):
        missing_frames_reasons([frames], [*quarantined, {"video_id": ids["good1"], "uri": "/videos/1.mp4"}])

    # Frames that no decode stage wrote cannot say why: the caller keeps its generic reason.
    storage.write_table(str(tmp_path / "loose" / "frames" / "part-0.parquet"),
                        storage.read_table(shard_files(frames)[0]))
    assert missing_frames_reasons([str(tmp_path / "loose" / "frames")], quarantined) is None


# --------------------------------------------------------------------------- finding 5
def test_a_full_disk_in_decode_batch_is_fatal_data_not_a_quarantine_row(tmp_path, fixtures_dir, ids, monkeypatch):
    """The Ray Data batch function reports the resource failure in its ``fatal`` column (Ray Data would
    bury an exception's cause) and removes its temp shard."""
    import errno

    frames_dir = str(tmp_path / "frames")
    fs, _ = storage.fs_and_path(frames_dir)
    real_open = fs.open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(fs, "open", lambda path, mode="rb", **kw: FullDisk(real_open(path, mode, **kw)) if "w" in mode
                        else real_open(path, mode, **kw))
    batch = {"video_id": np.array([ids["good0"]], dtype=object), "uri": np.array([str(fixtures_dir / "lift-demo/0.mp4")], dtype=object)}
    status = decode_batch(batch, frames_dir, output_params(PARAMS))
    path, reason, action = json.loads(status["fatal"][0])
    assert action == "writing" and path.startswith(frames_dir + "/part-") and reason.startswith("disk full")
    assert list(status["error"]) == [""]  # not a bad input
    assert hidden_files(frames_dir) == []


DISK_FULL_CHILD = textwrap.dedent(
    """
    import errno, json, sys

    import ray

    def disk_full():
        # Every Ray worker's local writes under frames/ fail as on a full disk.
        import errno
        from fsspec.implementations.local import LocalFileOpener

        real = LocalFileOpener.write

        def write(self, data):
            if "/frames/" in self.path:
                raise OSError(errno.ENOSPC, "No space left on device", self.path)
            return real(self, data)

        LocalFileOpener.write = write

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": disk_full})
    from lift_core import storage
    from lift_core.config import DecodeConfig
    from lift_core.video.decode_stage import decode_manifest

    manifest, out = sys.argv[1:]
    try:
        decode_manifest(manifest, out, DecodeConfig(frames=4, height=32, width=48, batch_size=1))
    except storage.ResourceError as err:
        print("RESOURCE-ERROR " + json.dumps(str(err)))
    """
)


def test_a_full_disk_in_a_ray_worker_stops_decode_with_one_line(tmp_path, manifest):
    """A real Ray worker hits ENOSPC writing its shard: the driver raises ``ResourceError`` (path and
    cause, one line), not ``RayTaskError(UserCodeException)``, and no temp shard stays behind."""
    out = tmp_path / "out"
    child = subprocess.run([sys.executable, "-c", DISK_FULL_CHILD, manifest, str(out)], cwd=REPO,
                           capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESOURCE-ERROR ")]
    assert lines, f"no ResourceError (rc={child.returncode}):\n{child.stdout[-2000:]}\n{child.stderr[-4000:]}"
    message = json.loads(lines[0].split(" ", 1)[1])
    assert message.startswith(f"writing {out}/frames/part-") and message.endswith(": disk full (No space left on device)")
    assert "\n" not in message
    assert hidden_files(str(out / "frames")) == [] and not list((out / "frames").glob("*.parquet"))
