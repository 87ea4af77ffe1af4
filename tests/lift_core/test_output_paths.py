"""Output paths are checked against the run's inputs before any work: nothing lands elsewhere, nothing
overwrites or changes an input, whichever way the path names it."""

from __future__ import annotations

import os
import uuid

import pytest

from lift_core import storage
from lift_core.output_paths import (FILE, FOLDER, PARENT, Output, OutputPathError, check_outputs, sidecar_quarantine,
                                    table_inputs)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"a")
    (tmp_path / "m.parquet").write_bytes(b"manifest")
    (tmp_path / "m.quarantine.parquet").write_bytes(b"rejects")
    return tmp_path


def refused(outputs, inputs, match):
    with pytest.raises(OutputPathError, match=match):
        check_outputs(outputs, inputs)


def test_a_file_output_that_is_a_folder_is_refused(files):
    refused([Output("--out", str(files / "videos"))], [], "is a folder")
    check_outputs([Output("--out", str(files / "videos"), FOLDER)], [])  # a folder output may exist


@pytest.mark.parametrize("kind", [FOLDER, PARENT])
def test_a_folder_output_that_is_a_file_is_refused(files, kind):
    refused([Output("--out", str(files / "m.parquet"), kind)], [], "is a file")


@pytest.mark.parametrize("name", ["same path", "relative path", "dot-dot path", "symlink", "hard link"])
def test_an_output_that_is_an_input_is_refused_however_it_is_named(files, monkeypatch, name):
    monkeypatch.chdir(files)
    target = {
        "same path": str(files / "m.parquet"),
        "relative path": "m.parquet",
        "dot-dot path": str(files / "videos" / ".." / "m.parquet"),
    }.get(name)
    if name == "symlink":
        os.symlink(files / "m.parquet", files / "link.parquet")
        target = str(files / "link.parquet")
    elif name == "hard link":
        os.link(files / "m.parquet", files / "hard.parquet")
        target = str(files / "hard.parquet")
    refused([Output("--out", target)], [("--videos", str(files / "m.parquet"))], "is the input --videos")


def test_a_sidecar_that_is_an_input_is_refused(files):
    """``--videos m.parquet --format lift-json --out m.json``: the JSON is new, but its quarantine
    sidecar would replace the input's own quarantine."""
    outputs = [Output("--out", str(files / "m.json")), Output("--out's quarantine", str(files / "m.quarantine.parquet"))]
    refused(outputs, table_inputs("--videos", str(files / "m.parquet")), "quarantine .* is the input --videos's quarantine")


def test_an_output_inside_an_input_folder_is_refused(files):
    refused([Output("--out", str(files / "videos" / "scores.parquet"))], [("--videos", str(files / "videos"))],
            "inside the input folder --videos")
    refused([Output("--out", str(files / "videos" / "sub"), FOLDER)], [("--videos", str(files / "videos"))],
            "inside the input folder")


def test_an_input_inside_a_folder_the_command_writes_is_refused(files):
    refused([Output("--out's frames/", str(files), FOLDER)], [("--manifest", str(files / "m.parquet"))],
            "input --manifest .* is inside --out's frames/")
    # The parent folder that only holds the outputs may hold inputs too.
    check_outputs([Output("--out", str(files), PARENT), Output("--out's quarantine", str(files / "q.parquet"))],
                  [("--manifest", str(files / "m.parquet"))])


def test_separate_paths_pass_and_absent_inputs_are_skipped(files):
    assert sidecar_quarantine(str(files / "m.parquet")) == str(files / "m.quarantine.parquet")
    check_outputs([Output("--out", str(files / "scores.parquet")), Output("--out", str(files / "new" / "x.parquet"))],
                  [*table_inputs("--videos", str(files / "m.parquet")), ("--critic", None), ("--videos", str(files / "videos"))])
    assert table_inputs("--videos", str(files / "videos")) == [("--videos", str(files / "videos"))]
    assert [w for w, _ in table_inputs("--videos", str(files / "m.parquet"))] == ["--videos", "--videos's quarantine"]


def test_remote_paths_are_compared_too():
    root = f"memory://output-paths/{uuid.uuid4().hex}"
    storage.write_bytes_atomic(f"{root}/in/m.parquet", b"m")
    try:
        refused([Output("--out", f"{root}/in/m.parquet")], [("--videos", f"{root}/in/m.parquet")], "is the input")
        refused([Output("--out", f"{root}/in")], [], "is a folder")
        refused([Output("--out", f"{root}/in/x.parquet", FILE)], [("--videos", f"{root}/in")], "inside the input folder")
        check_outputs([Output("--out", f"{root}/out/x.parquet")], [("--videos", f"{root}/in/m.parquet")])
        check_outputs([Output("--out", "/tmp/in/m.parquet")], [("--videos", f"{root}/in/m.parquet")])  # another store
    finally:
        fs, path = storage.fs_and_path(root)
        fs.rm(path, recursive=True)
