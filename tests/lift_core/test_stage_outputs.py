"""Verified stage outputs and clear resource errors (issue 18, findings 4 and 5), at the storage layer.

Finding 4: ``_SUCCESS.json`` lists every output file with its size, row count and sha256; a cache hit
checks sizes and row counts (hashes on request) and a mismatch makes the stage run again.
Finding 5: a full disk, a denied write or missing credentials raise one line naming the path and the
cause, also from inside a Ray worker, and the temp file of the failed write is gone.
"""

from __future__ import annotations

import errno
import logging
import pickle
import uuid

import pyarrow as pa
import pytest

from lift_core import storage
from lift_core.storage import ResourceError, StageResult


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "root")
        return
    uri = f"memory://stage-outputs/{uuid.uuid4().hex}"
    yield uri
    fs, path = storage.fs_and_path(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def files_under(uri: str) -> list[str]:
    fs, path = storage.fs_and_path(uri)
    return sorted(p[len(path.rstrip("/")) + 1:] for p in fs.find(path))


def finished_stage(root: str) -> StageResult:
    """A stage with a Parquet table, a folder of two shards and a JSON file, marked done."""
    out = storage.stage_dir(root, "decode", "k1")
    storage.write_table(storage.join(out, "frames", "part-a.parquet"), pa.table({"video_id": ["a", "b"]}))
    storage.write_table(storage.join(out, "frames", "part-b.parquet"), pa.table({"video_id": ["c"]}))
    storage.write_table(storage.join(out, "quarantine.parquet"), pa.table({"video_id": ["x", "y", "z"]}))
    storage.write_json(storage.join(out, "metrics.json"), {"agreement": 0.5})
    outputs = {"frames": storage.join(out, "frames"), "quarantine": storage.join(out, "quarantine.parquet"),
               "metrics": storage.join(out, "metrics.json")}
    return storage.mark_success(StageResult("decode", "k1", out, outputs, {"decoded": 3}))


def overwrite(uri: str, data: bytes) -> None:
    fs, path = storage.fs_and_path(uri)
    with fs.open(path, "wb") as f:
        f.write(data)


# --------------------------------------------------------------------------- finding 4
def test_success_lists_every_output_with_size_rows_and_hash(root):
    result = finished_stage(root)
    record = storage.read_json(storage.join(result.out_uri, storage.SUCCESS_FILE))
    files = record["files"]
    assert set(files) == {"frames", "quarantine", "metrics"}
    assert files["frames"]["kind"] == "dir" and set(files["frames"]["files"]) == {"part-a.parquet", "part-b.parquet"}
    shard = files["frames"]["files"]["part-a.parquet"]
    assert shard["rows"] == 2 and shard["size"] == len(storage.read_bytes(storage.join(result.out_uri, "frames/part-a.parquet")))
    assert shard["sha256"] == storage.sha256_hex(storage.read_bytes(storage.join(result.out_uri, "frames/part-a.parquet")))
    assert files["quarantine"]["kind"] == "file" and files["quarantine"]["rows"] == 3
    assert "rows" not in files["metrics"] and files["metrics"]["size"] > 0
    # The listing stays out of the small dict that tasks pass around and the CLI prints.
    assert "files" not in result.to_dict() and storage.load_success(result.out_uri) == result


def test_an_intact_stage_is_a_cache_hit(root):
    result = finished_stage(root)
    assert storage.load_success(result.out_uri) == result
    assert storage.load_success(result.out_uri, verify=True) == result
    assert storage.require_success(result.out_uri) == result


def test_a_truncated_shard_makes_the_stage_run_again(root, caplog):
    result = finished_stage(root)
    shard = storage.join(result.out_uri, "frames", "part-a.parquet")
    overwrite(shard, storage.read_bytes(shard)[:-40])
    with caplog.at_level(logging.WARNING, logger="lift.storage"):
        assert storage.load_success(result.out_uri) is None
    assert "part-a.parquet" in caplog.text and "recorded" in caplog.text
    done, problems = storage.check_success(result.out_uri)
    assert done is None and [(p.output, p.uri) for p in problems] == [("frames", shard)]
    with pytest.raises(storage.StageOutputError, match="part-a.parquet"):
        storage.require_success(result.out_uri)


def test_a_deleted_or_added_shard_makes_the_stage_run_again(root):
    result = finished_stage(root)
    fs, path = storage.fs_and_path(storage.join(result.out_uri, "frames", "part-b.parquet"))
    fs.rm(path)
    (problem,) = storage.check_success(result.out_uri)[1]
    assert problem.uri.endswith("frames/part-b.parquet") and problem.reason == "missing"

    result = finished_stage(root)  # written again: intact
    storage.write_table(storage.join(result.out_uri, "frames", "part-c.parquet"), pa.table({"video_id": ["a"]}))
    (problem,) = storage.check_success(result.out_uri)[1]
    assert problem.uri.endswith("frames/part-c.parquet") and "does not list it" in problem.reason
    # Hidden temp files of writers are not content: they never count as added output.
    fs.rm(storage.fs_and_path(problem.uri)[1])
    storage.write_bytes_atomic(storage.join(result.out_uri, "frames", ".tmp-123-part-d.parquet"), b"partial")
    assert storage.load_success(result.out_uri) == result


def test_a_deleted_file_output_or_another_row_count_makes_the_stage_run_again(root):
    result = finished_stage(root)
    quarantine = result.outputs["quarantine"]
    fs, path = storage.fs_and_path(quarantine)
    fs.rm(path)
    assert [str(p) for p in storage.check_success(result.out_uri)[1]] == [f"{quarantine}: missing"]


def test_full_hashes_only_when_verification_is_asked_for(root, monkeypatch):
    result = finished_stage(root)
    metrics = result.outputs["metrics"]
    same_size = storage.read_bytes(metrics).replace(b"0.5", b"0.9")
    overwrite(metrics, same_size)
    monkeypatch.delenv(storage.VERIFY_ENV, raising=False)
    assert storage.load_success(result.out_uri) == result  # cheap check: sizes and row counts only
    (problem,) = storage.check_success(result.out_uri, verify=True)[1]
    assert problem.uri == metrics and "sha256" in problem.reason
    monkeypatch.setenv(storage.VERIFY_ENV, "1")
    assert storage.load_success(result.out_uri) is None


def test_an_unreadable_success_file_means_not_done(root):
    result = finished_stage(root)
    overwrite(storage.join(result.out_uri, storage.SUCCESS_FILE), b'{"stage": "dec')
    assert storage.load_success(result.out_uri) is None


# --------------------------------------------------------------------------- finding 5
class _FailingWriter:
    """A file object whose writes fail as a full disk (or another OSError) does."""

    def __init__(self, real, error: BaseException):
        self.real, self.error = real, error

    def write(self, data):
        raise self.error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def fail_writes(monkeypatch, uri: str, error: BaseException) -> None:
    fs, _ = storage.fs_and_path(uri)
    real_open = fs.open

    def open_(path, mode="rb", **kwargs):
        f = real_open(path, mode, **kwargs)
        return _FailingWriter(f, error) if "w" in mode else f

    monkeypatch.setattr(fs, "open", open_)


@pytest.mark.parametrize("error, cause", [
    (OSError(errno.ENOSPC, "No space left on device"), "disk full (No space left on device)"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
])
def test_a_failed_write_is_one_line_naming_the_path_and_leaves_no_temp_file(root, monkeypatch, error, cause):
    uri = storage.join(root, "decode", "k", "frames", "part-1.parquet")
    storage.makedirs(storage.join(root, "decode", "k", "frames"))
    fail_writes(monkeypatch, uri, error)
    with pytest.raises(ResourceError) as info:
        storage.write_table(uri, pa.table({"x": [1, 2]}))
    message = str(info.value)
    assert message == f"writing {uri}: {cause}" and "\n" not in message
    assert info.value.path == uri and isinstance(info.value.__cause__, OSError)
    assert files_under(storage.join(root, "decode")) == []  # the temp file is gone


def test_missing_credentials_are_a_resource_error_on_reads_and_writes(root, monkeypatch):
    from botocore.exceptions import NoCredentialsError

    uri = storage.join(root, "manifest.parquet")
    storage.write_bytes_atomic(uri, b"bytes")
    fs, _ = storage.fs_and_path(uri)

    def no_credentials(*args, **kwargs):
        raise NoCredentialsError()

    monkeypatch.setattr(fs, "open", no_credentials)
    with pytest.raises(ResourceError, match=rf"^reading {uri}: missing or invalid credentials \(Unable to locate"):
        storage.read_bytes(uri)
    with pytest.raises(ResourceError, match=rf"^writing {uri}: missing or invalid credentials"):
        storage.write_bytes_atomic(uri, b"new")


def test_an_unreadable_input_stays_a_per_input_error(root, monkeypatch):
    """Permission denied on a read is one bad input (its stage quarantines it), not a dead run."""
    uri = storage.join(root, "video.mp4")
    storage.write_bytes_atomic(uri, b"bytes")
    fs, _ = storage.fs_and_path(uri)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", uri)

    monkeypatch.setattr(fs, "open", denied)
    with pytest.raises(PermissionError):
        storage.read_bytes(uri)


def test_a_resource_error_survives_pickling_as_ray_sends_it():
    err = ResourceError("/runs/x/part.parquet", "disk full (No space left on device)", "writing")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ResourceError and str(back) == str(err) == "writing /runs/x/part.parquet: disk full (No space left on device)"
    assert (back.path, back.reason, back.action) == (err.path, err.reason, err.action)


def test_a_full_disk_in_a_ray_data_worker_surfaces_as_one_line(ray_session):
    """Ray Data wraps a UDF's error into ``RayTaskError(UserCodeException)`` whose only trace of the
    cause is text; ``resource_error_in`` recovers the path and the cause from it."""
    import ray.data

    def write_shard(batch):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/decode/k/frames/.tmp-1-part-0.parquet")

    ds = ray.data.from_items([{"x": 1}]).map_batches(write_shard, batch_format="numpy")
    with pytest.raises(Exception) as info:
        ds.take_all()
    assert storage.resource_error_in(info.value) is not None, f"no cause found in {type(info.value).__name__}"
    found = storage.resource_error_in(info.value)
    assert str(found) == "/runs/decode/k/frames/.tmp-1-part-0.parquet: disk full (No space left on device)"


def test_resource_error_in_looks_through_chains_and_ignores_other_errors():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/out.bin")
        except OSError as err:
            raise RuntimeError("stage failed") from err
    except RuntimeError as wrapped:
        assert str(storage.resource_error_in(wrapped)) == "/data/out.bin: disk full (No space left on device)"
    assert storage.resource_error_in(ValueError("bad caption")) is None
    assert storage.resource_error_in(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None
