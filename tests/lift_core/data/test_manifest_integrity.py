"""Issue 27, class 3: a manifest's ``video_id`` is checked against its file, and its URIs mean the same
files from any working directory.

Variants: a row that carries another video's id, an id that is no content id at all, a file replaced
since ingest, a relative URI read from another directory (where other videos sit under the same
names), a manifest moved away from its videos, a remote (``memory://``) file. Each wrong row is
quarantined with both ids (expected and actual); every right row is decoded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from lift_core import storage
from lift_core.config import DecodeConfig
from lift_core.data.ingest import ingest_source
from lift_core.data.manifest import URI_BASE_KEY, read_manifest, resolve, write_manifest
from lift_core.schemas import MANIFEST_SCHEMA, rows_to_table
from lift_core.video.decode_stage import decode_batch, decode_manifest, output_params
from lift_core.video.frames import read_frames

PARAMS = DecodeConfig(frames=2, height=16, width=16, batch_size=8)


def _manifest(path: Path, rows: list[tuple[str, str]], metadata: dict | None = None) -> str:
    table = rows_to_table([{"video_id": v, "uri": u, "caption": "c", "source": "t", "split": "test"} for v, u in rows],
                          MANIFEST_SCHEMA)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)
    return str(path)


@pytest.fixture()
def two_folders(tmp_path, fixtures_dir) -> dict:
    """``a/`` holds the demo's 0.mp4 and 1.mp4; ``b/`` holds the same names swapped (other content)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for name, other in (("0.mp4", "1.mp4"), ("1.mp4", "0.mp4")):
        shutil.copy(fixtures_dir / "lift-demo" / name, a / name)
        shutil.copy(fixtures_dir / "lift-demo" / other, b / name)
    ids = {n: storage.content_id(str(a / n)) for n in ("0.mp4", "1.mp4")}
    return {"a": a, "b": b, "ids": ids}


def test_relative_uris_resolve_against_the_manifest_never_the_working_directory(two_folders, monkeypatch):
    a, b, ids = two_folders["a"], two_folders["b"], two_folders["ids"]
    manifest = _manifest(a / "m.parquet", [(ids["0.mp4"], "0.mp4"), (ids["1.mp4"], "./sub/../1.mp4")])
    for cwd in (a, b):
        monkeypatch.chdir(cwd)
        assert read_manifest(manifest).column("uri").to_pylist() == [f"{a}/0.mp4", f"{a}/1.mp4"]
        assert read_manifest("m.parquet" if cwd == a else f"../a/m.parquet").column("uri").to_pylist() == \
            [f"{a}/0.mp4", f"{a}/1.mp4"]
    # A recorded base wins over the manifest's folder: a copy elsewhere still means the same files.
    moved = _manifest(b / "moved.parquet", [(ids["0.mp4"], "0.mp4")], {URI_BASE_KEY: str(a).encode()})
    assert read_manifest(moved).column("uri").to_pylist() == [f"{a}/0.mp4"]
    assert resolve("s3://bucket/x", "../y/0.mp4") == "s3://bucket/y/0.mp4"
    assert resolve("/base", "/abs/0.mp4") == "/abs/0.mp4" and resolve("/base", "gs://b/0.mp4") == "gs://b/0.mp4"


def test_ingest_writes_absolute_uris_and_records_its_base(two_folders, fixtures_dir, monkeypatch):
    a, b = two_folders["a"], two_folders["b"]
    entries = json.loads((fixtures_dir / "lift-demo/test.json").read_text())
    (a / "test.json").write_text(json.dumps([{**e, "video": e["video"].rsplit("/", 1)[-1]} for e in entries]))
    monkeypatch.chdir(a)
    ingest_source("lift-inference", "test.json", "m.parquet")  # every path relative to this directory
    table = pq.read_table(a / "m.parquet")
    assert sorted(table.column("uri").to_pylist()) == [f"{a}/0.mp4", f"{a}/1.mp4"]
    assert table.schema.metadata[URI_BASE_KEY] == str(a).encode()
    monkeypatch.chdir(b)  # where other videos sit under the same names
    assert sorted(read_manifest(f"{a}/m.parquet").column("uri").to_pylist()) == [f"{a}/0.mp4", f"{a}/1.mp4"]
    write_manifest(str(b / "copy.parquet"), table.drop_columns([]).replace_schema_metadata(None))
    assert pq.read_table(b / "copy.parquet").schema.metadata[URI_BASE_KEY] == str(b).encode()


def _decode(rows: list[tuple[str, str]], frames_dir: str) -> dict[str, str]:
    batch = {"video_id": np.array([v for v, _ in rows], dtype=object), "uri": np.array([u for _, u in rows], dtype=object)}
    status = decode_batch(batch, frames_dir, output_params(PARAMS))
    assert list(status["fatal"]) == [""] * len(rows)
    return dict(zip(status["uri"], status["error"]))


def test_a_row_whose_file_holds_another_video_is_quarantined_with_both_ids(two_folders, tmp_path):
    a, b, ids = two_folders["a"], two_folders["b"], two_folders["ids"]
    made_up = "0123456789abcdef"
    shutil.copy(a / "0.mp4", a / "0.mp4.copy")
    errors = _decode([(ids["0.mp4"], f"{a}/0.mp4"),  # right
                      (ids["0.mp4"], f"{a}/1.mp4"),  # another video's id in the row
                      (ids["1.mp4"], f"{b}/1.mp4"),  # the same name in another folder: other content
                      (made_up, f"{a}/0.mp4.copy")],  # an id that is no content id
                     str(tmp_path / "frames"))
    assert errors[f"{a}/0.mp4"] == ""
    for uri, expected, actual in ((f"{a}/1.mp4", ids["0.mp4"], ids["1.mp4"]), (f"{b}/1.mp4", ids["1.mp4"], ids["0.mp4"]),
                                  (f"{a}/0.mp4.copy", made_up, ids["0.mp4"])):
        assert errors[uri].startswith(f"video_id {expected} does not match the file: {uri} holds the video with "
                                      f"content id {actual} (expected {expected}, actual {actual})")
    assert set(read_frames(str(tmp_path / "frames"))) == {ids["0.mp4"]}  # no frames under a wrong id


def test_a_file_replaced_since_ingest_is_quarantined(two_folders, fixtures_dir, tmp_path):
    a, ids = two_folders["a"], two_folders["ids"]
    (a / "test.json").write_text(json.dumps([{"video": "0.mp4", "caption": "a crane"}, {"video": "1.mp4", "caption": "x"}]))
    ingest_source("lift-inference", str(a / "test.json"), str(tmp_path / "m.parquet"))
    shutil.copy(fixtures_dir / "lift-demo/1.mp4", a / "0.mp4")  # replaced after ingest, same name
    rows = read_manifest(str(tmp_path / "m.parquet")).to_pylist()
    errors = _decode([(r["video_id"], r["uri"]) for r in rows], str(tmp_path / "frames"))
    assert errors[f"{a}/1.mp4"] == ""
    assert f"(expected {ids['0.mp4']}, actual {ids['1.mp4']})" in errors[f"{a}/0.mp4"]


def test_remote_files_are_checked_too(two_folders, tmp_path):
    ids = two_folders["ids"]
    fs = fsspec.filesystem("memory")
    fs.pipe("/manifest-check/0.mp4", (two_folders["a"] / "0.mp4").read_bytes())
    try:
        errors = _decode([(ids["0.mp4"], "memory://manifest-check/0.mp4"), (ids["1.mp4"], "memory://manifest-check/0.mp4")],
                         str(tmp_path / "frames"))
    finally:
        fs.rm("/manifest-check", recursive=True)
    assert "(expected" in errors["memory://manifest-check/0.mp4"]  # the second row's verdict (same URI)
    assert set(read_frames(str(tmp_path / "frames"))) == {ids["0.mp4"]}


def test_decode_of_a_user_manifest_from_another_directory(ray_session, two_folders, tmp_path, monkeypatch):
    a, b, ids = two_folders["a"], two_folders["b"], two_folders["ids"]
    manifest = _manifest(a / "m.parquet", [(ids["0.mp4"], "0.mp4"), (ids["0.mp4"], "1.mp4"), (ids["1.mp4"], "1.mp4")])
    monkeypatch.chdir(b)  # b/0.mp4 and b/1.mp4 are the other videos: never read
    res = decode_manifest(manifest, str(tmp_path / "out"), PARAMS)
    assert set(read_frames(res["outputs"]["frames"])) == {ids["0.mp4"], ids["1.mp4"]}
    # The second row repeats 0.mp4's id (a duplicate row) and is not decoded; nothing is quarantined.
    assert res["counts"] == {"videos": 2, "decoded": 2, "quarantined": 0, "resumed": 0, "duplicate_rows": 1}
    swapped = _manifest(a / "swapped.parquet", [(ids["1.mp4"], "0.mp4"), (ids["0.mp4"], "1.mp4")])
    res = decode_manifest(swapped, str(tmp_path / "out2"), PARAMS)
    rows = storage.read_table(res["outputs"]["quarantine"]).to_pylist()
    assert res["counts"]["decoded"] == 0 and sorted(r["uri"] for r in rows) == [f"{a}/0.mp4", f"{a}/1.mp4"]
    assert all(r["stage"] == "decode" and "does not match the file" in r["error"] for r in rows)


def test_every_row_is_checked_a_repeated_id_too(two_folders):
    """``check_rows`` (what ``lift score`` runs on a manifest it is given): the score stage uses every
    row, so a row that repeats another video's id with another file must not pass as a repeat."""
    from lift_core.data.inputs import InputLimits
    from lift_core.data.manifest import check_rows

    a, ids = two_folders["a"], two_folders["ids"]
    table = read_manifest(_manifest(a / "m.parquet", [(ids["0.mp4"], "0.mp4"), (ids["0.mp4"], "1.mp4"),
                                                      ("", "0.mp4"), (ids["1.mp4"], "gone.mp4")]))
    good, bad = check_rows(table, InputLimits())
    assert good.column("uri").to_pylist() == [f"{a}/0.mp4"]
    assert [(r["uri"], r["video_id"], r["stage"]) for r in bad] == [
        (f"{a}/1.mp4", ids["0.mp4"], "check-manifest"), (f"{a}/0.mp4", "", "check-manifest"),
        (f"{a}/gone.mp4", ids["1.mp4"], "check-manifest")]
    assert f"(expected {ids['0.mp4']}, actual {ids['1.mp4']})" in bad[0]["error"]
    assert bad[1]["error"] == "manifest row without uri or video_id"
    assert bad[2]["error"] == f"missing video file: {a}/gone.mp4"


@pytest.mark.timeout(60)
def test_a_manifest_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    import os

    os.mkfifo(tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=r"not a regular file \(a FIFO\)"):
        read_manifest(str(tmp_path / "m.parquet"))
