"""Discovery: folders with sidecar captions or manifests; content ids survive renames; the id index."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lift_core import storage
from lift_core.rescore import discovery


def test_folder_listing_ids_copies_and_captions(tmp_path, synth_videos, fixtures_dir, write_generations,
                                                write_real_fixtures):
    root = tmp_path / "gen"
    paths = write_generations(root, synth_videos[:3])
    real = write_real_fixtures(root / "nested")
    shutil.copyfile(paths[0], root / "copy-of-0.mp4")  # same bytes, another name, no caption of its own
    (root / ".partial.mp4").write_bytes(b"a writer in progress")
    (root / "notes.txt").write_text("not a video")

    listing = discovery.list_videos([str(root)])
    names = sorted(f.uri.rsplit("/", 1)[-1] for f in listing.files)
    assert names == ["copy-of-0.mp4", "gen-000.mp4", "gen-001.mp4", "gen-002.mp4", "real-0.mp4", "real-1.mp4"]

    files, new_index, bad = discovery.assign_video_ids(listing.files, {})
    assert not bad and len(new_index) == 6
    ids = {f.uri.rsplit("/", 1)[-1]: f.video_id for f in files}
    assert ids["copy-of-0.mp4"] == ids["gen-000.mp4"] == storage.content_id(str(paths[0]))
    assert ids["real-0.mp4"] == storage.content_id(str(fixtures_dir / "lift-demo/0.mp4"))

    unique, copies = discovery.unique_by_content(files)
    assert len(unique) == 5 and [c.uri.rsplit("/", 1)[-1] for cs in copies.values() for c in cs] == ["copy-of-0.mp4"]
    assert ids["gen-000.mp4"] in copies  # the original (older) is the one kept
    with_captions, no_caption = discovery.attach_captions(unique, copies)
    assert not no_caption
    caps = {f.uri.rsplit("/", 1)[-1]: f.caption for f in with_captions}
    assert caps["gen-000.mp4"] == synth_videos[0][1]
    # A copy without a sidecar takes its original's caption when it is the one kept.
    (root / "gen-000.mp4").unlink()
    only_copy = [f for f in unique if f.video_id != ids["copy-of-0.mp4"]] + [f for f in files if f.uri.endswith("copy-of-0.mp4")]
    solo, _ = discovery.attach_captions(only_copy, {ids["copy-of-0.mp4"]: [f for f in files if f.uri.endswith("gen-000.mp4")]})
    assert {f.uri.rsplit("/", 1)[-1]: f.caption for f in solo}["copy-of-0.mp4"] == synth_videos[0][1]
    assert caps["gen-001.mp4"] == synth_videos[1][1]
    assert caps["real-1.mp4"].startswith(json.loads((fixtures_dir / "lift-demo/test.json").read_text())[1]["caption"][:20])
    assert real[0].exists()


def test_captions_json_and_missing_caption(tmp_path, synth_videos):
    root = tmp_path / "gen"
    root.mkdir()
    (root / "a.mp4").write_bytes(synth_videos[0][0])
    (root / "b.mp4").write_bytes(synth_videos[1][0])
    (root / "c.mp4").write_bytes(synth_videos[2][0])
    (root / "c.json").write_text("{not json")
    (root / "captions.json").write_text(json.dumps({"a.mp4": "a red circle"}))
    files, _, _ = discovery.assign_video_ids(discovery.list_videos([str(root)]).files, {})
    ok, bad = discovery.attach_captions(files)
    assert [(f.uri.rsplit("/", 1)[-1], f.caption) for f in ok] == [("a.mp4", "a red circle")]
    errors = {r["uri"].rsplit("/", 1)[-1]: r for r in bad}
    assert "no caption" in errors["b.mp4"]["error"] and errors["b.mp4"]["video_id"] == files[1].video_id
    assert "bad sidecar" in errors["c.mp4"]["error"]


def test_index_hit_skips_rehash_rename_gets_same_id(tmp_path, synth_videos, write_generations):
    root = tmp_path / "gen"
    write_generations(root, synth_videos[:2])
    calls = []

    def hasher(uri):
        calls.append(uri)
        return storage.content_id(uri)

    first, index_rows, _ = discovery.assign_video_ids(discovery.list_videos([str(root)]).files, {}, hasher=hasher)
    index = {(r["uri"], r["version"]): r["video_id"] for r in index_rows}
    calls.clear()
    again, new_rows, _ = discovery.assign_video_ids(discovery.list_videos([str(root)]).files, index, hasher=hasher)
    assert calls == [] and new_rows == [] and [f.video_id for f in again] == [f.video_id for f in first]
    (root / "gen-000.mp4").rename(root / "renamed.mp4")
    moved, new_rows, _ = discovery.assign_video_ids(discovery.list_videos([str(root)]).files, index, hasher=hasher)
    assert len(calls) == 1 and calls[0].endswith("renamed.mp4")  # a new name is hashed once...
    assert {f.video_id for f in moved} == {f.video_id for f in first}  # ...and keeps its content id


def test_manifests_parquet_and_lift_json(tmp_path, synth_videos, fixtures_dir, write_generations):
    paths = write_generations(tmp_path / "gen", synth_videos[:2])
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"uri": [str(paths[0]), str(paths[1]), str(tmp_path / "gone.mp4"), str(paths[0])],
                             "caption": ["one", "two", "three", None]}), manifest)
    listing = discovery.list_videos([str(manifest)])
    assert [(f.uri, f.caption) for f in listing.files] == [(str(paths[0]), "one"), (str(paths[1]), "two")]
    errors = sorted(r["error"] for r in listing.quarantine)
    assert len(errors) == 2 and "not found" in errors[1] and "non-empty caption" in errors[0]

    # LiFT's own inference input: the real fixture's test.json, videos next to it.
    lift = discovery.list_videos([str(fixtures_dir / "lift-demo/test.json")])
    assert sorted(f.uri.rsplit("/", 1)[-1] for f in lift.files) == ["0.mp4", "1.mp4"]
    assert all(f.caption for f in lift.files) and not lift.quarantine


def test_missing_uri_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="generations URI not found"):
        discovery.list_videos([str(tmp_path / "nowhere")])
    # A watched location that may not exist yet (missing_ok): nothing listed there, and it is named.
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "a.mp4").write_bytes(b"not decoded here")
    listing = discovery.list_videos([str(tmp_path / "nowhere"), str(tmp_path / "gen")], missing_ok=True)
    assert [f.uri.rsplit("/", 1)[-1] for f in listing.files] == ["a.mp4"]
    assert listing.missing == [str(tmp_path / "nowhere")] and not listing.quarantine
    (tmp_path / "x.csv").write_text("uri\n")
    with pytest.raises(ValueError, match="expected a folder"):
        discovery.list_videos([str(tmp_path / "x.csv")])
