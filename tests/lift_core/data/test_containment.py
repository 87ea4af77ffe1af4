"""Issue 18, finding 6: a relative video path that leaves its root is rejected at ingest, never opened.

Absolute paths (and URLs), which LiFT's own files use, stay allowed and are counted in the ingest
summary (``absolute_paths``).
"""

from __future__ import annotations

import json
import shutil

import pytest

from lift_core import storage
from lift_core.config import load_config
from lift_core.data.ingest import ingest_source, quarantine_uri_for, run_ingest
from lift_core.data.sources import read_source
from lift_core.domain import QUESTIONS

ESCAPES = ["../../../../etc/passwd", "videos/../../0.mp4", "..", "./../1.mp4"]


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Every URI ingest hashes (opens)."""
    seen: list[str] = []
    real = storage.input_content_id  # what ingest hashes with (regular files only, bounded)

    def spy(uri, *args, **kwargs):
        seen.append(uri)
        return real(uri, *args, **kwargs)

    monkeypatch.setattr(storage, "input_content_id", spy)
    return seen


def _entry(fmt: str, video: str, caption: str) -> dict:
    if fmt == "lift-hra":
        return {"video": video, "conversations": [{"from": "human", "value": f"<video>\n {caption} {QUESTIONS['motion']}"},
                                                  {"from": "gpt", "value": "Good. Smooth."}]}
    if fmt == "critic-output":
        return {"video": video, "caption": caption, "semantic consistency": "Good. ok", "fidelity issues": "Bad. x",
                "motion issues": "Normal. y"}
    if fmt == "alignment":
        return {"video": video, "caption": caption, "score": 0.5}
    return {"video_id": "x", "video": video, "caption": caption}


@pytest.mark.parametrize("fmt", ["lift-inference", "lift-hra", "critic-output", "alignment"])
def test_a_relative_path_that_leaves_its_root_is_rejected_and_never_opened(tmp_path, fixtures_dir, opened, fmt):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(fixtures_dir / "lift-demo/0.mp4", root / "0.mp4")
    shutil.copy(fixtures_dir / "lift-demo/1.mp4", tmp_path / "1.mp4")  # outside the root
    videos = ["0.mp4", *ESCAPES, str(tmp_path / "1.mp4")]  # the last one: an absolute path
    src = root / "annotations.json"
    src.write_text(json.dumps([_entry(fmt, v, f"caption {i}") for i, v in enumerate(videos)]))
    out = tmp_path / "manifest.parquet"
    counts = ingest_source(fmt, str(src), str(out))
    manifest = storage.read_table(str(out)).to_pylist()
    assert sorted(r["uri"] for r in manifest) == sorted([str(root / "0.mp4"), str(tmp_path / "1.mp4")])
    assert counts["rejected_entries"] == len(ESCAPES) and counts["absolute_paths"] == 1
    assert sorted(opened) == sorted([str(root / "0.mp4"), str(tmp_path / "1.mp4")])  # /etc/passwd never
    rows = storage.read_table(quarantine_uri_for(str(out))).to_pylist()
    assert [r["uri"] for r in rows] == [str(src)] * len(ESCAPES)
    assert [r["error"] for r in rows] == [
        f"rejected entry {i}: video path {v!r} leaves its root {root} (relative paths must stay under it)"
        for i, v in enumerate(ESCAPES, start=1)
    ]


def test_a_path_that_stays_under_its_root_is_normalised(tmp_path, fixtures_dir):
    shutil.copy(fixtures_dir / "lift-demo/0.mp4", tmp_path / "0.mp4")
    src = tmp_path / "test.json"
    src.write_text(json.dumps([{"video": "sub/../0.mp4", "caption": "a"}, {"video": "s3://bucket/x.mp4", "caption": "b"}]))
    res = read_source("lift-inference", str(src), "s3://lift-data/root")
    assert [r["uri"] for r in res.records] == ["s3://lift-data/root/0.mp4", "s3://bucket/x.mp4"]
    assert res.rejects == [] and res.absolute_paths == 1  # a URL is absolute too


def test_lifts_own_annotations_stay_whole(fixtures_dir, tmp_path):
    # The real VIDGEN annotations: relative paths under their folder; none rejected, none absolute.
    res = read_source("lift-hra", str(fixtures_dir / "annotations/vidgen-data.json"))
    assert res.rejects == [] and res.absolute_paths == 0 and len(res.records) == 711
    # The same entries with absolute paths, as LiFT's own training files have them: allowed, counted.
    data = json.loads((fixtures_dir / "annotations/vidgen-data.json").read_text())
    for entry in data:
        entry["video"] = f"/mnt/lift/{entry['video']}"
    (tmp_path / "abs.json").write_text(json.dumps(data))
    res = read_source("lift-hra", str(tmp_path / "abs.json"))
    assert res.rejects == [] and res.absolute_paths == 711 and res.records[0]["uri"].startswith("/mnt/lift/videos/")


def test_the_ingest_stage_counts_absolute_paths(tmp_path, fixtures_dir, opened):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(fixtures_dir / "lift-demo/0.mp4", data / "0.mp4")
    shutil.copy(fixtures_dir / "lift-demo/1.mp4", tmp_path / "1.mp4")
    entries = json.loads((fixtures_dir / "lift-demo/test.json").read_text())
    entries[1]["video"] = str(tmp_path / "1.mp4")
    entries.append({"video_id": "x", "video": "../../../../etc/passwd", "caption": "a password file"})
    (data / "test.json").write_text(json.dumps(entries))
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"datasets:\n  demo:\n    uri: {data}/test.json\n    format: lift-inference\n"
                       f"    videos_root: {data}\n    source: hd-vila\n")
    cfg = load_config(None, [f"run_root={tmp_path}/run", f"data.catalog={catalog}", "data.datasets=[demo]"])
    res = run_ingest(cfg)
    assert res.counts["videos"] == 2 and res.counts["absolute_paths"] == 1 and res.counts["rejected_entries"] == 1
    assert "/etc/passwd" not in " ".join(opened)
    [row] = storage.read_table(res.outputs["quarantine"]).to_pylist()
    assert "'../../../../etc/passwd' leaves its root" in row["error"]
    # The count is in the stage's _SUCCESS.json too (a rerun reads it from there).
    assert run_ingest(cfg).counts["absolute_paths"] == 1
