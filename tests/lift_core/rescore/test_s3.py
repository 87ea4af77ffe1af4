"""Rescoring with generations, store and critic on ``s3://``: moto's S3 server on loopback."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
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
    files = s3.find("lift/scores_store/delta/scores")
    data = [p for p in files if p.endswith(".parquet")]
    assert data and all("/scored_date=" in p for p in data)
    assert [p for p in files if "/_delta_log/" in p]  # a Delta table on S3
    assert st.version() == second.outputs["versions"][-1]
    assert s3.cat_file("lift/scores_store/trend.png")[:4] == b"\x89PNG"
    assert Path(st.read_quarantine().column("uri").to_pylist()[0]).name == "broken.mp4"


def _row(vid: str, who: str) -> dict:
    return {"video_id": vid, "critic_id": "c1", "caption": "c", "reward": 0.5, "source": who,
            "scored_at": datetime.now(timezone.utc)}


def test_s3_two_writers_lose_no_row_and_commit_with_conditional_puts(s3, tmp_path, monkeypatch):
    """Two writers MERGE the same keys at once into a store on S3: each key once, none lost.

    Each commit file is created with a conditional PUT (``If-None-Match: *``): what keeps a second
    writer from replacing a version on S3 (no AWS_S3_ALLOW_UNSAFE_RENAME, no DynamoDB lock)."""
    from moto.moto_api import recorder

    monkeypatch.setattr(recorder, "_location", str(tmp_path / "moto_recording"))
    uri = "s3://lift/concurrent_store"
    ScoresStore(uri).append_scores([_row("seed", "seed")], "seed", 0)
    barrier, results, errors = threading.Barrier(2), {}, []

    def write(who: str) -> None:
        st = ScoresStore(uri)
        barrier.wait()
        try:
            results[who] = sum(st.append_scores([_row(f"k{i}", who), _row(f"{who}-{i}", who)], who, i)["inserted"]
                               for i in range(6))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    recorder.start_recording()
    try:
        threads = [threading.Thread(target=write, args=(w,)) for w in ("w1", "w2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        recorder.stop_recording()
    assert not errors, errors
    t = ScoresStore(uri).read_scores(["video_id"], dedup=False)
    keys = t.column("video_id").to_pylist()
    assert len(keys) == len(set(keys)) == 1 + 6 + 12 and sum(results.values()) == 18
    # create, seed, then one version per batch. (Not via history(): delta-rs 1.6 holds the GIL while it
    # lists the log, and this moto server answers from a thread of this process.)
    assert ScoresStore(uri).version() == 1 + 12

    puts = [json.loads(line) for line in (tmp_path / "moto_recording").read_text().splitlines()]
    commits = [r for r in puts if r["method"] == "PUT" and "/_delta_log/" in r["url"] and r["url"].endswith(".json")]
    assert len(commits) >= 12
    assert all({k.lower(): v for k, v in r["headers"].items()}.get("if-none-match") == "*" for r in commits)


def test_s3_old_parquet_store_is_migrated(s3):
    from legacy_store import write_legacy_store

    want = write_legacy_store("s3://lift/old_store")
    st = ScoresStore("s3://lift/old_store")
    got = {(r["video_id"], r["caption_id"], r["critic_id"]): r["reward"] for r in st.read_scores().to_pylist()}
    assert got == want["scores"] and st.read_index() == want["index"] and st.scored_pairs() == want["scored_pairs"]
    assert st.migration["files_moved"] == {"scores": 5, "quarantine": 1, "_index": 2, "_locks": 1}
    assert not s3.find("lift/old_store/scores") and len(s3.find("lift/old_store/_legacy")) == 9
