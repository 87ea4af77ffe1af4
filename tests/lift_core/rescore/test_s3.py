"""Rescoring with generations, store and critic on ``s3://``: moto's S3 server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from lift_core.rescore import ScoresStore, run_rescore

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """An empty bucket ``lift``; every s3:// URI in the test goes to the loopback server."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=30)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"client_kwargs": {"endpoint_url": moto_endpoint}})
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("lift")
    return fs


def _upload(fs, videos, start: int) -> None:
    for i, (data, caption) in enumerate(videos, start=start):
        fs.pipe_file(f"lift/incoming/gen-{i:03d}.mp4", data)
        fs.pipe_file(f"lift/incoming/gen-{i:03d}.json", json.dumps({"caption": caption}).encode())


@pytest.mark.slow
def test_s3_generations_store_and_critic(s3, tmp_path, rescore_cfg, critic_a, synth_videos):
    s3.put(critic_a.rstrip("/") + "/", "lift/critics/a/", recursive=True)  # the adapter itself on S3
    _upload(s3, synth_videos[:3], 0)
    s3.pipe_file("lift/incoming/broken.mp4", b"\x00\x00\x00\x18ftypmp42 then garbage")
    s3.pipe_file("lift/incoming/broken.json", b'{"caption": "a broken upload"}')
    cfg = rescore_cfg(tmp_path, store="s3://lift/scores_store")

    first = run_rescore(cfg, ["s3://lift/incoming"], "s3://lift/critics/a")
    assert first.counts["scored"] == 3 and first.counts["quarantined"] == 1
    _upload(s3, synth_videos[3:5], 3)
    s3.copy("lift/incoming/gen-000.mp4", "lift/incoming/copy-of-000.mp4")
    second = run_rescore(cfg, ["s3://lift/incoming"], "s3://lift/critics/a")
    assert second.counts["scored"] == 2 and second.counts["copies"] == 1 and second.counts["hashed"] == 3

    st = ScoresStore("s3://lift/scores_store")
    t = st.read_scores(["video_id", "critic_id", "uri"], dedup=False)
    assert t.num_rows == 5 == len(set(t.column("video_id").to_pylist()))
    assert all(u.startswith("s3://lift/incoming/gen-") for u in t.column("uri").to_pylist())
    parts = s3.find("lift/scores_store/scores")
    assert parts and all("/scored_date=" in p and Path(p).name.startswith("part-") for p in parts)
    assert not s3.find("lift/scores_store/_locks")  # released
    assert s3.cat_file("lift/scores_store/trend.png")[:4] == b"\x89PNG"
    assert Path(st.read_quarantine().column("uri").to_pylist()[0]).name == "broken.mp4"


def test_s3_lock_is_exclusive(s3):
    """Exclusive create on S3 is a conditional PUT (If-None-Match: *): a second holder is refused."""
    from lift_core.rescore.lock import LeaseLock, LockTimeout

    uri = "s3://lift/scores_store/_locks/c.lock"
    with LeaseLock(uri) as held:
        with pytest.raises(LockTimeout):
            LeaseLock(uri, wait_s=0).acquire()
        held.heartbeat()
    assert not s3.exists("lift/scores_store/_locks/c.lock")
