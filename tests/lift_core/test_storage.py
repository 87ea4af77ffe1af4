"""storage.py on local paths and memory://: joins, atomic writes, tables, JSON, the stage-output convention."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from lift_core import storage
from lift_core.storage import StageResult


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    """An empty folder URI: a local path, or a fresh memory:// folder (removed afterwards)."""
    if request.param == "local":
        yield str(tmp_path / "root")
        return
    uri = f"memory://test-storage/{uuid.uuid4().hex}"
    yield uri
    fs, path = storage.fs_and_path(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def listing(uri: str) -> list[str]:
    """Every file under ``uri``, relative to it, hidden ones included."""
    fs, path = storage.fs_and_path(uri)
    return sorted(p[len(path.rstrip("/")) + 1:] for p in fs.find(path))


# --------------------------------------------------------------------------- paths
def test_join_strips_slashes_between_parts():
    assert storage.join("s3://bucket/run/", "/ingest/", "key") == "s3://bucket/run/ingest/key"
    assert storage.join("/tmp/run", "a/b", "c.parquet") == "/tmp/run/a/b/c.parquet"
    assert storage.join("memory://x") == "memory://x"
    assert storage.join(Path("/tmp/run"), "a") == "/tmp/run/a"


def test_uris_round_trip_through_the_filesystem(root):
    uri = storage.join(root, "a", "b.bin")
    storage.write_bytes_atomic(uri, b"x")
    fs, path = storage.fs_and_path(uri)
    back = storage.to_uri(fs, path)
    assert storage.read_bytes(back) == b"x" and storage.fs_and_path(back)[1] == path
    if root.startswith("memory://"):
        assert back.startswith("memory://") and storage.local_path(uri) is None
        assert storage.abspath_if_local(uri) == uri
    else:
        assert back == uri and storage.local_path(uri) == uri
        assert storage.abspath_if_local("rel/x") == os.path.join(os.getcwd(), "rel", "x")


# --------------------------------------------------------------------------- atomic writes
def test_atomic_write_creates_parents_overwrites_and_leaves_no_temp(root):
    uri = storage.join(root, "deep", "er", "f.txt")
    assert not storage.exists(uri)
    storage.write_bytes_atomic(uri, b"first")
    storage.write_bytes_atomic(uri, "second é".encode())
    assert storage.read_text(uri) == "second é"
    assert listing(root) == ["deep/er/f.txt"]


def test_a_write_that_dies_before_the_move_leaves_the_old_file(root, monkeypatch):
    uri = storage.join(root, "f.txt")
    storage.write_bytes_atomic(uri, b"old")
    fs, _ = storage.fs_and_path(uri)

    def crash(*args, **kwargs):
        raise OSError("killed before the rename")

    monkeypatch.setattr(fs, "mv", crash)
    with pytest.raises(OSError, match="killed"):
        storage.write_bytes_atomic(uri, b"new and partial")
    monkeypatch.undo()
    assert storage.read_bytes(uri) == b"old"
    # Nothing but the old file is visible: a temp file that a killed writer leaves is a hidden sibling,
    # so a reader of the folder never takes it for output.
    assert [name for name in listing(root) if not name.startswith(".tmp-")] == ["f.txt"]


def test_makedirs_and_exists(root):
    uri = storage.join(root, "a", "b")
    storage.makedirs(uri)
    storage.makedirs(uri)  # idempotent
    fs, path = storage.fs_and_path(uri)
    assert storage.exists(uri) and fs.isdir(path)


# --------------------------------------------------------------------------- json and tables
def test_json_is_sorted_and_stringifies_what_json_cannot(root):
    uri = storage.join(root, "m.json")
    when = datetime(2024, 5, 1, tzinfo=timezone.utc)
    storage.write_json(uri, {"b": 1, "a": [1.5, None], "when": when, "path": Path("/x")})
    text = storage.read_text(uri)
    assert text.index('"a"') < text.index('"b"')
    assert storage.read_json(uri) == {"a": [1.5, None], "b": 1, "when": str(when), "path": "/x"}


def test_table_round_trip_with_deterministic_bytes(root):
    table = pa.table({"video_id": ["b", "a"], "reward": [0.25, 0.75], "frames": [[1, 2], [3]]})
    one, two = storage.join(root, "one.parquet"), storage.join(root, "two.parquet")
    storage.write_table(one, table)
    storage.write_table(two, table)
    assert storage.read_table(one).equals(table)
    assert storage.read_bytes(one) == storage.read_bytes(two)
    assert storage.read_table(one, columns=["reward"]).column_names == ["reward"]


def test_a_folder_of_shards_reads_as_one_table_in_name_order(root):
    shards = storage.join(root, "frames")
    storage.write_table(storage.join(shards, "part-1.parquet"), pa.table({"id": [3], "extra": ["x"]}))
    storage.write_table(storage.join(shards, "part-0.parquet"), pa.table({"id": [1, 2]}))
    storage.write_table(storage.join(shards, ".tmp-abc-part-2.parquet"), pa.table({"id": [99]}))
    storage.write_bytes_atomic(storage.join(shards, "_SUCCESS.json"), b"{}")
    got = storage.read_table(shards)
    assert got.column("id").to_pylist() == [1, 2, 3]
    assert got.column("extra").to_pylist() == [None, None, "x"]  # schemas are promoted, not refused
    empty = storage.join(root, "empty")
    storage.makedirs(empty)
    storage.write_bytes_atomic(storage.join(empty, "notes.txt"), b"no shards here")
    with pytest.raises(FileNotFoundError, match="no parquet files under"):
        storage.read_table(empty)


# --------------------------------------------------------------------------- content ids
def test_content_id_is_the_sha256_prefix_of_the_bytes(root):
    data = bytes(range(256)) * 10
    uri = storage.join(root, "v.mp4")
    storage.write_bytes_atomic(uri, data)
    expected = hashlib.sha256(data).hexdigest()[:16]
    assert storage.content_id(uri) == expected
    assert storage.content_id(uri, chunk=7) == expected  # chunking does not change the id
    assert storage.sha256_hex(data)[:16] == expected


# --------------------------------------------------------------------------- the stage convention
def test_stage_key_hashes_its_inputs_and_the_code_version(monkeypatch):
    key = storage.stage_key("decode", ["u1", "u2"], "cfg", {"x": 1})
    assert len(key) == 16 and int(key, 16) >= 0
    assert storage.stage_key("decode", ["u2", "u1"], "cfg", {"x": 1}) == key  # upstream order is irrelevant
    others = [
        storage.stage_key("score", ["u1", "u2"], "cfg", {"x": 1}),
        storage.stage_key("decode", ["u1"], "cfg", {"x": 1}),
        storage.stage_key("decode", ["u1", "u2"], "cfg2", {"x": 1}),
        storage.stage_key("decode", ["u1", "u2"], "cfg", {"x": 2}),
        storage.stage_key("decode", ["u1", "u2"], "cfg"),
    ]
    assert key not in others and len(set(others)) == len(others)
    version = storage.code_version()
    assert len(version) == 16 and storage.code_version() == version
    monkeypatch.setattr(storage, "_CODE_VERSION", "another-version")
    assert storage.stage_key("decode", ["u1", "u2"], "cfg", {"x": 1}) != key


def test_success_marks_a_stage_done(root):
    out = storage.stage_dir(root, "ingest", "abc123")
    assert out == f"{root}/ingest/abc123"
    assert storage.load_success(out) is None
    result = StageResult("ingest", "abc123", out, {"manifest": f"{out}/manifest.parquet"}, {"videos": 3}, {"note": "x"})
    assert storage.mark_success(result) is result
    assert listing(out) == [storage.SUCCESS_FILE]
    assert storage.load_success(out) == result
    stored = storage.read_json(storage.join(out, storage.SUCCESS_FILE))
    assert {k: stored[k] for k in result.to_dict()} == result.to_dict()
    # Extra keys in an older or newer _SUCCESS.json are ignored; missing optional ones default.
    storage.write_json(storage.join(out, storage.SUCCESS_FILE), {"stage": "ingest", "key": "k", "out_uri": out, "new": 1})
    assert storage.load_success(out) == StageResult("ingest", "k", out)


def test_fingerprint_of_a_plain_file_is_its_content_id(root):
    uri = storage.join(root, "in.json")
    storage.write_bytes_atomic(uri, b"[1, 2]")
    assert storage.fingerprint_uri(uri) == storage.content_id(uri)


def test_fingerprint_of_a_folder_follows_its_bytes_not_its_sizes(root):
    folder = storage.join(root, "videos")
    storage.write_bytes_atomic(storage.join(folder, "a.mp4"), b"aaaa")
    storage.write_bytes_atomic(storage.join(folder, "sub", "b.mp4"), b"bb")
    first = storage.fingerprint_uri(folder)
    storage.write_bytes_atomic(storage.join(folder, ".tmp-writer.mp4"), b"in progress")
    assert storage.fingerprint_uri(folder) == first  # hidden files are not content
    storage.write_bytes_atomic(storage.join(folder, "a.mp4"), b"zzzz")  # same name, same size
    same_size = storage.fingerprint_uri(folder)
    assert same_size != first
    storage.write_bytes_atomic(storage.join(folder, "c.mp4"), b"c")
    assert storage.fingerprint_uri(folder) not in (first, same_size)
    copy = storage.join(root, "elsewhere", "videos-copy")  # a copy is the same content wherever it lives
    for rel in ("a.mp4", "sub/b.mp4", "c.mp4"):
        storage.write_bytes_atomic(storage.join(copy, rel), storage.read_bytes(storage.join(folder, rel)))
    assert storage.fingerprint_uri(copy) == storage.fingerprint_uri(folder)


def test_fingerprint_of_a_stage_output_uses_the_recorded_sha256_while_unchanged(root, monkeypatch):
    from lift_core import hash_cache

    out = storage.stage_dir(root, "decode", "key1")
    shard = storage.join(out, "frames", "part-0.parquet")
    storage.write_table(shard, pa.table({"x": [1]}))
    storage.mark_success(StageResult("decode", "key1", out, {"frames": storage.join(out, "frames")}))
    assert storage.fingerprint_uri(shard) == storage.content_id(shard)  # a file's content, wherever it is
    frames_fp = storage.fingerprint_uri(storage.join(out, "frames"))

    def no_reading(*_a, **_k):
        raise AssertionError("bytes reread although _SUCCESS.json recorded them")

    monkeypatch.setattr(hash_cache, "file_sha256", no_reading)
    assert storage.fingerprint_uri(storage.join(out, "frames")) == frames_fp  # recorded, not reread
    monkeypatch.undo()

    storage.write_table(shard, pa.table({"x": [2]}))  # rewritten after the stage: same size, other bytes
    assert storage.fingerprint_uri(shard) == storage.content_id(shard)
    assert storage.fingerprint_uri(storage.join(out, "frames")) != frames_fp


def test_verify_rehashes_a_stage_output_the_record_vouches_for(tmp_path, caplog):
    """An output changed behind its stage's back, its size and timestamps set back as they were: only
    ``verify`` can see it, and it does, so what reads it is not a cache hit."""
    out = storage.stage_dir(str(tmp_path), "ingest", "k")
    manifest = storage.join(out, "manifest.parquet")
    storage.write_table(manifest, pa.table({"x": [1]}))
    storage.mark_success(StageResult("ingest", "k", out, {"manifest": manifest}))
    before = storage.fingerprint_uri(manifest)
    st = os.stat(manifest)
    raw = bytearray(Path(manifest).read_bytes())
    raw[-20] ^= 0xFF  # same size
    fd = os.open(manifest, os.O_WRONLY)
    os.pwrite(fd, bytes(raw), 0)
    os.close(fd)
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns))
    success = Path(out) / storage.SUCCESS_FILE
    os.utime(success, ns=(success.stat().st_atime_ns, os.stat(manifest).st_ctime_ns))  # vouches for it
    assert storage.fingerprint_uri(manifest) == before  # the cheap path trusts the record
    with caplog.at_level("WARNING", logger="lift.storage"):
        assert storage.fingerprint_uri(manifest, verify=True) != before
    assert "not those its stage recorded" in caplog.text


def test_fingerprint_finds_the_record_at_most_three_folders_up(root, monkeypatch):
    from lift_core import hash_cache

    out = storage.stage_dir(root, "s", "k")
    near = storage.join(out, "a", "b", "f.bin")  # _SUCCESS.json two folders above the file's folder
    far = storage.join(out, "a", "b", "c", "f.bin")  # three above: hashed as a plain file
    for uri in (near, far):
        storage.write_bytes_atomic(uri, b"payload")
    storage.mark_success(StageResult("s", "k", out, {"a": storage.join(out, "a")}))
    hashed = []
    real = hash_cache.file_sha256
    monkeypatch.setattr(hash_cache, "file_sha256", lambda fs, p, verify=False: hashed.append(p) or real(fs, p, verify))
    assert storage.fingerprint_uri(near) == storage.fingerprint_uri(far) == storage.content_id(near)
    assert [p.rsplit("/", 2)[-2] for p in hashed] == ["c"]  # only the far one was read


def test_a_file_is_never_written_in_place_of_a_folder(root):
    folder = storage.join(root, "out")
    storage.write_bytes_atomic(storage.join(folder, "kept.txt"), b"x")
    with pytest.raises(IsADirectoryError):
        storage.write_bytes_atomic(folder, b"data")
    with pytest.raises(IsADirectoryError):
        storage.write_table(folder, pa.table({"x": [1]}))
    assert listing(folder) == ["kept.txt"]  # no hidden .tmp-* file left inside



# --------------------------------------------------------------------------- local copies of model folders
def test_a_remote_model_folder_is_copied_once_and_again_when_its_content_changes(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    uri = f"memory://test-storage/{uuid.uuid4().hex}/vae"
    storage.write_json(storage.join(uri, "config.json"), {"latent_channels": 4})
    storage.write_bytes_atomic(storage.join(uri, "weights.bin"), b"\x01" * 10)
    try:
        first = storage.local_dir(uri, "config.json")
        assert first.startswith(str(tmp_path / "tmp")) and sorted(os.listdir(first)) == ["config.json", "weights.bin"]
        assert storage.local_dir(uri, "config.json") == first  # cached: no second copy
        storage.write_bytes_atomic(storage.join(uri, "weights.bin"), b"\x02" * 11)
        second = storage.local_dir(uri, "config.json")
        assert second != first and Path(second, "weights.bin").read_bytes() == b"\x02" * 11
        assert not [p for p in os.listdir(os.path.dirname(first)) if ".tmp-" in p]  # no temp copies left
        with pytest.raises(FileNotFoundError, match="no model_index.json"):
            storage.local_dir(uri, "model_index.json")  # an incomplete folder is an error, not a cache entry
    finally:
        fs, path = storage.fs_and_path(uri)
        fs.rm(path, recursive=True)


def test_a_local_model_folder_is_used_where_it_is_when_complete(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        storage.local_dir(str(tmp_path), "config.json")
    (tmp_path / "config.json").write_text("{}")
    assert storage.local_dir(str(tmp_path), "config.json") == str(tmp_path)
