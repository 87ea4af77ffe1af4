"""The sha256 of input files, reread only when the file may have changed.

Stage keys, critic ids and model identities hash the bytes of what decides a result: names and sizes
miss a retrained adapter of the same shape. Rehashing a multi-gigabyte base model or a video folder
on every run is slow, so each digest is remembered under what identifies that version of the file:

- a local file by (absolute path, device, inode, size, ``mtime_ns``, ``ctime_ns``). Any write changes
  mtime and ctime, so a changed file is hashed again; ``touch`` can set mtime back but not ctime.
  A digest is remembered only when the file was last changed more than ``RACY_WINDOW_NS`` before the
  hashing began: timestamps have a granularity, and a second write inside the same tick would
  otherwise keep them (git's "racy clean" problem). A file that changes while it is hashed is hashed
  again, up to three times, and its digest is not remembered;
- a remote object by (URI, size, the version tags its store reports: ETag, generation, ...); an
  object without such a tag is hashed every time.

``verify`` (``lift --verify``) ignores what is remembered and rereads every byte.

The cache is a folder of small files, one per file version, each written atomically:
``LIFT_HASH_CACHE`` when set (``off`` disables it), else ``$XDG_CACHE_HOME/lift/sha256`` or
``~/.cache/lift/sha256``. Deleting it is always safe; an unwritable one only costs rehashing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
import uuid
from typing import Any

log = logging.getLogger("lift.storage")

CACHE_ENV = "LIFT_HASH_CACHE"
RACY_WINDOW_NS = 2_000_000_000  # coarser than any common file system's timestamp tick (FAT: 2 s)
_CHUNK = 1 << 22
# Tags a store changes on every write of an object (s3fs, gcsfs, adlfs and friends).
_STRONG_TAGS = ("ETag", "etag", "md5Hash", "crc32c", "generation", "VersionId", "version_id", "content_md5")
_WEAK_TAGS = ("LastModified", "last_modified", "updated", "mtime")
_memo: dict[str, str] = {}  # this process's lookups, on top of the folder (bounded below)
_MEMO_LIMIT = 200_000


class NotARegularFile(OSError):
    """A path that is not a regular file (a FIFO, a device, a socket): reading it may never end."""


def cache_dir() -> str | None:
    """The cache folder, or None when ``LIFT_HASH_CACHE=off``."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured.lower() in ("off", "0", "none", "false"):
        return None
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lift", "sha256")


def _is_local(fs: Any) -> bool:
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return proto in ("file", "local")


def _local_version(path: str) -> tuple[str, os.stat_result]:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFile(f"{path}: not a regular file; only regular files are hashed")
    key = json.dumps(["local", os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                      st.st_ctime_ns])
    return key, st


def _remote_version(fs: Any, path: str) -> str | None:
    info = fs.info(path)
    if info.get("type", "file") != "file":
        raise NotARegularFile(f"{path}: not a file")
    tags = {t: str(info[t]) for t in (*_STRONG_TAGS, *_WEAK_TAGS) if info.get(t) not in (None, "")}
    if not any(t in tags for t in _STRONG_TAGS):
        return None  # nothing tells two versions apart: hash every time
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return json.dumps([proto, path, int(info.get("size") or 0), sorted(tags.items())])


def _entry_path(root: str, key: str) -> str:
    name = hashlib.sha256(key.encode()).hexdigest()
    return os.path.join(root, name[:2], name)


def _lookup(key: str) -> str | None:
    if key in _memo:
        return _memo[key]
    root = cache_dir()
    if root is None:
        return None
    try:
        with open(_entry_path(root, key)) as f:
            digest = f.read().strip()
    except OSError:
        return None
    if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
        _remember_in_memo(key, digest)
        return digest
    return None


def _remember_in_memo(key: str, digest: str) -> None:
    if len(_memo) >= _MEMO_LIMIT:
        _memo.clear()
    _memo[key] = digest


def _store(key: str, digest: str) -> None:
    _remember_in_memo(key, digest)
    root = cache_dir()
    if root is None:
        return
    path = _entry_path(root, key)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w") as f:
            f.write(digest)
        os.replace(tmp, path)
    except OSError as err:  # a read-only home or a full disk: rehashing next time is the only cost
        log.debug("hash cache %s not written: %s", path, err)
        try:
            os.remove(tmp)
        except OSError:
            pass


def _hash_stream(fs: Any, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def file_sha256(fs: Any, path: str, verify: bool = False) -> str:
    """The sha256 (hex) of the file ``path`` on ``fs``, from the cache when that version was hashed
    before (unless ``verify``). Raises ``NotARegularFile`` for FIFOs, devices and folders."""
    if _is_local(fs):
        for _ in range(3):
            key, before = _local_version(path)
            if not verify and (found := _lookup(key)) is not None:
                return found
            started = time.time_ns()
            digest = _hash_stream(fs, path)
            after_key, _ = _local_version(path)
            if after_key != key:
                continue  # written to while hashed: the digest may mix two versions
            if started - max(before.st_mtime_ns, before.st_ctime_ns) > RACY_WINDOW_NS:
                _store(key, digest)
            return digest
        log.warning("%s kept changing while it was hashed; its digest is not cached", path)
        return digest
    key = _remote_version(fs, path)
    if key is not None and not verify and (found := _lookup(key)) is not None:
        return found
    digest = _hash_stream(fs, path)
    if key is not None and _remote_version(fs, path) == key:  # not rewritten while hashed
        _store(key, digest)
    return digest


__all__ = ["CACHE_ENV", "NotARegularFile", "RACY_WINDOW_NS", "cache_dir", "file_sha256"]
