"""Issue 27, class 5 (ingest's part): the quarantine counts only what is really dropped, and symlinks
inside a videos root are contained like paths.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from lift_core import storage
from lift_core.config import SplitConfig
from lift_core.data.ingest import build_tables, ingest_source, quarantine_uri_for
from lift_core.data.sources import read_source
from lift_core.domain import QUESTIONS


def _quarantine(out) -> list[dict]:
    return storage.read_table(quarantine_uri_for(str(out))).to_pylist()


@pytest.fixture()
def copies(tmp_path, fixtures_dir):
    """``0.mp4`` and two byte-identical copies of it, and ``1.mp4``."""
    for name in ("0.mp4", "copy-a.mp4", "copy-b.mp4"):
        shutil.copy(fixtures_dir / "lift-demo/0.mp4", tmp_path / name)
    shutil.copy(fixtures_dir / "lift-demo/1.mp4", tmp_path / "1.mp4")
    return tmp_path


def test_a_copy_that_drops_nothing_is_counted_not_quarantined(copies):
    entries = [{"video": "0.mp4", "caption": "a crane"}, {"video": "copy-a.mp4", "caption": "a crane"},
               {"video": "copy-b.mp4", "caption": "a crane at dusk"}, {"video": "1.mp4", "caption": "a panda"}]
    (copies / "test.json").write_text(json.dumps(entries))
    out = copies / "m.parquet"
    counts = ingest_source("lift-inference", str(copies / "test.json"), str(out))
    assert (counts["videos"], counts["duplicate_videos"], counts["quarantined"]) == (2, 2, 1)
    [row] = _quarantine(out)  # only the copy whose caption is not in the manifest
    assert row["uri"] == str(copies / "copy-b.mp4") and row["video_id"] == storage.content_id(str(copies / "0.mp4"))
    assert row["error"] == (f"duplicate content of {copies}/0.mp4 (kept that one); dropped with it, as they differ "
                            "from that row's: caption")
    # A caller that uses every entry (lift score scores each (video, caption)) drops no copy at all.
    counts = ingest_source("lift-inference", str(copies / "test.json"), str(out), every_entry_used=True)
    assert (counts["duplicate_videos"], counts["quarantined"]) == (2, 0) and _quarantine(out) == []


def test_a_copy_with_other_ratings_is_quarantined_naming_what_it_loses(copies):
    def rating(video: str, answer: str) -> dict:
        return {"video": video, "conversations": [
            {"from": "human", "value": f"<video>\n a crane {QUESTIONS['motion']}"}, {"from": "gpt", "value": answer}]}

    (copies / "hra.json").write_text(json.dumps([rating("0.mp4", "Good. Smooth."), rating("copy-a.mp4", "Good. Smooth."),
                                                 rating("copy-b.mp4", "Bad. It jumps.")]))
    out = copies / "m.parquet"
    counts = ingest_source("lift-hra", str(copies / "hra.json"), str(out))
    assert (counts["videos"], counts["duplicate_videos"], counts["quarantined"]) == (1, 2, 1)
    [row] = _quarantine(out)
    assert row["uri"] == str(copies / "copy-b.mp4") and row["error"].endswith("differ from that row's: label_motion, reason_motion")


def test_the_same_file_in_two_sources_is_one_video(copies):
    (copies / "a.json").write_text(json.dumps([{"video": "0.mp4", "caption": "a crane"}]))
    (copies / "b.json").write_text(json.dumps([{"video": "0.mp4", "caption": "another caption"}]))
    results = [read_source("lift-inference", str(copies / n)) for n in ("a.json", "b.json")]
    tables = build_tables(results, SplitConfig())
    assert tables.counts["duplicate_videos"] == 1 and tables.quarantine.num_rows == 0


@pytest.fixture()
def outside(tmp_path, fixtures_dir):
    """``root/`` with a video; ``elsewhere/`` with videos and a captions file outside it."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir(), elsewhere.mkdir()
    shutil.copy(fixtures_dir / "lift-demo/0.mp4", root / "0.mp4")
    shutil.copy(fixtures_dir / "lift-demo/1.mp4", elsewhere / "1.mp4")
    (elsewhere / "secret.json").write_text(json.dumps({"caption": "not yours"}))
    return root, elsewhere


def test_a_symlink_out_of_a_video_folder_is_rejected(outside):
    root, elsewhere = outside
    (root / "out.mp4").symlink_to(elsewhere / "1.mp4")  # a file link that leaves the folder
    (root / "sub").mkdir()
    (root / "sub" / "in.mp4").symlink_to(root / "0.mp4")  # a link that stays inside: fine (a copy)
    (root / "linked-dir").symlink_to(elsewhere, target_is_directory=True)  # not walked
    (root / "2.mp4").write_bytes((elsewhere / "1.mp4").read_bytes())
    (root / "2.json").symlink_to(elsewhere / "secret.json")  # a sidecar link that leaves the folder
    (root / "captions.json").write_text(json.dumps({"0.mp4": "a crane", "out.mp4": "x", "sub/in.mp4": "a crane"}))
    res = read_source("video-dir", str(root))
    assert sorted(r["uri"] for r in res.records) == [f"{root}/0.mp4", f"{root}/sub/in.mp4"]
    why = {r.file: r.reason for r in res.rejects}
    assert why[f"{root}/out.mp4"] == f"a symlink that resolves to {elsewhere}/1.mp4, outside the folder {root}"
    assert why[f"{root}/2.json"] == (f"bad sidecar: a symlink that resolves to {elsewhere}/secret.json, outside the "
                                     f"folder {root}")
    assert len(res.rejects) == 2


@pytest.mark.parametrize("fmt", ["lift-inference", "alignment"])
def test_a_relative_path_through_a_symlink_out_of_its_root_is_rejected(outside, fmt):
    root, elsewhere = outside
    (root / "link.mp4").symlink_to(elsewhere / "1.mp4")
    (root / "dir").symlink_to(elsewhere, target_is_directory=True)
    (root / "inside.mp4").symlink_to("0.mp4")
    videos = ["0.mp4", "link.mp4", "dir/1.mp4", "inside.mp4", f"{elsewhere}/1.mp4"]
    (root / "src.json").write_text(json.dumps([{"video": v, "caption": f"c{i}", "score": 0.5}
                                               for i, v in enumerate(videos)]))
    res = read_source(fmt, str(root / "src.json"))
    assert [r["uri"] for r in res.records] == [f"{root}/0.mp4", f"{root}/inside.mp4", f"{elsewhere}/1.mp4"]
    assert res.absolute_paths == 1  # an absolute path is the user's explicit choice, as before
    assert [(r.index, r.reason) for r in res.rejects] == [
        (1, f"video path 'link.mp4' is a symlink (or under one) that resolves to {elsewhere}/1.mp4, outside its "
            f"root {root}"),
        (2, f"video path 'dir/1.mp4' is a symlink (or under one) that resolves to {elsewhere}/1.mp4, outside its "
            f"root {root}"),
    ]


def test_a_root_that_is_itself_a_symlink_keeps_its_videos(outside, tmp_path):
    root, _ = outside
    os.symlink(root, tmp_path / "alias")
    (root / "captions.json").write_text(json.dumps({"0.mp4": "a crane"}))
    res = read_source("video-dir", str(tmp_path / "alias"))
    assert [r["caption"] for r in res.records] == ["a crane"] and res.rejects == []
