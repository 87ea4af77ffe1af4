"""The stat cache of input sha256s: a hit only while the file is the version that was hashed."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid

import pytest

from lift_core import hash_cache, storage


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache folder, and a counter of the files really read."""
    monkeypatch.setenv(hash_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(hash_cache, "_memo", {})
    reads: list[str] = []
    real = hash_cache._hash_stream
    monkeypatch.setattr(hash_cache, "_hash_stream", lambda fs, p: reads.append(p) or real(fs, p))
    return reads


def sha(path) -> str:
    return storage.fingerprint_uri(str(path))  # goes through the cache, as every stage key does


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def old(path, seconds: float = 60) -> None:
    """Pretend the file was written long ago, as a user's input usually was (mtime only: ctime is now)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def local(path) -> str:
    fs, p = storage.fs_and_path(str(path))
    return hash_cache.file_sha256(fs, p)


def test_an_unchanged_file_is_read_once(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(hash_cache, "RACY_WINDOW_NS", -10**12)  # ctime cannot be set back in a test
    f = tmp_path / "adapter_model.safetensors"
    f.write_bytes(b"weights-1")
    assert local(f) == digest(b"weights-1")
    monkeypatch.setattr(hash_cache, "_memo", {})  # a new process: only the folder remembers
    assert local(f) == digest(b"weights-1")
    assert cache == [str(f)]


@pytest.mark.parametrize("change", ["same size", "same size, mtime set back", "replaced by rename"])
def test_a_changed_file_is_read_again_even_when_its_size_and_mtime_are_kept(tmp_path, cache, monkeypatch, change):
    monkeypatch.setattr(hash_cache, "RACY_WINDOW_NS", -10**12)
    f = tmp_path / "adapter_model.safetensors"
    f.write_bytes(b"weights-1")
    old(f)
    st = os.stat(f)
    assert local(f) == digest(b"weights-1")
    if change == "replaced by rename":
        (tmp_path / "new").write_bytes(b"weights-2")
        os.replace(tmp_path / "new", f)
    else:
        f.write_bytes(b"weights-2")
        if change == "same size, mtime set back":
            os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
            assert os.stat(f).st_mtime_ns == st.st_mtime_ns and os.stat(f).st_size == st.st_size
    assert local(f) == digest(b"weights-2")
    assert len(cache) == 2


def test_a_file_changed_within_the_racy_window_is_not_remembered(tmp_path, cache):
    f = tmp_path / "just-written.bin"
    f.write_bytes(b"abc")  # ctime is now: a same-tick rewrite could keep every timestamp
    assert local(f) == local(f) == digest(b"abc")
    assert len(cache) == 2
    assert not any(files for _, _, files in os.walk(hash_cache.cache_dir()))


def test_verify_rereads_whatever_is_remembered(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(hash_cache, "RACY_WINDOW_NS", -10**12)
    f = tmp_path / "base.safetensors"
    f.write_bytes(b"base")
    local(f)
    key, _ = hash_cache._local_version(str(f))
    monkeypatch.setattr(hash_cache, "_memo", {})
    with open(hash_cache._entry_path(hash_cache.cache_dir(), key), "w") as out:
        out.write("0" * 64)  # a poisoned entry: only a reread can tell
    fs, p = storage.fs_and_path(str(f))
    assert hash_cache.file_sha256(fs, p) == "0" * 64
    assert hash_cache.file_sha256(fs, p, verify=True) == digest(b"base")
    monkeypatch.setenv(storage.VERIFY_ENV, "1")  # what `lift --verify` sets
    assert storage.fingerprint_uri(str(f)) == digest(b"base")[:16]


def test_a_fifo_is_refused_not_read(tmp_path, cache):
    fifo = tmp_path / "videos" / "pipe.mp4"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def run():
        try:
            local(fifo)
        except BaseException as err:  # noqa: BLE001 - the thread reports whatever it raised
            result.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive() and isinstance(result[0], hash_cache.NotARegularFile)
    (tmp_path / "videos" / "a.mp4").write_bytes(b"a")
    storage.fingerprint_uri(str(tmp_path / "videos"))  # a folder's listing skips what is not a file
    assert cache == [str(tmp_path / "videos" / "a.mp4")]


def test_an_object_without_a_version_tag_is_hashed_every_time(cache):
    uri = f"memory://hash-cache/{uuid.uuid4().hex}/a.bin"
    storage.write_bytes_atomic(uri, b"one")
    try:
        assert storage.fingerprint_uri(uri) == digest(b"one")[:16]
        storage.write_bytes_atomic(uri, b"two")
        assert storage.fingerprint_uri(uri) == digest(b"two")[:16]
        assert len(cache) == 2
    finally:
        fs, path = storage.fs_and_path(uri)
        fs.rm(path.rsplit("/", 1)[0], recursive=True)


def test_a_cache_that_cannot_be_written_costs_only_rereading(tmp_path, cache, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    monkeypatch.setenv(hash_cache.CACHE_ENV, str(blocker / "cache"))
    monkeypatch.setattr(hash_cache, "RACY_WINDOW_NS", -10**12)
    f = tmp_path / "x.bin"
    f.write_bytes(b"x")
    assert local(f) == digest(b"x")
    monkeypatch.setenv(hash_cache.CACHE_ENV, "off")
    monkeypatch.setattr(hash_cache, "_memo", {})
    assert local(f) == digest(b"x") and hash_cache.cache_dir() is None
