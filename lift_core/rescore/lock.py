"""A lease lock on an fsspec path: one rescoring writer per (store, critic) at a time.

Acquiring creates the lock file with exclusive-create semantics (``open(..., "xb")``: ``O_EXCL``
locally, a conditional ``If-None-Match: *`` PUT on S3 and MinIO). The holder refreshes a heartbeat
in the file after each committed batch. A lock is stale when its heartbeat is older than the TTL,
or when its holder was a process on this host that is no longer alive (a killed run); a stale lock
is broken by whoever first creates the breaker file named after the stale holder's token, so two
waiters never both break it. The store's readers deduplicate anyway, so even a lock broken under a
slow-but-alive holder cannot produce duplicate rows; the lock saves the duplicate work.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from lift_core import storage


class LockTimeout(TimeoutError):
    """Another live run holds the lock for longer than we were willing to wait."""


class LockLost(RuntimeError):
    """Our lock was broken (our heartbeat went stale) and someone else holds it now."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class Holder:
    token: str
    host: str
    pid: int
    heartbeat: float
    acquired: float

    @classmethod
    def parse(cls, raw: bytes) -> "Holder | None":
        try:
            d = json.loads(raw)
            return cls(str(d["token"]), str(d["host"]), int(d["pid"]), float(d["heartbeat"]), float(d["acquired"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, heartbeat {time.time() - self.heartbeat:.0f}s ago"


class LeaseLock:
    """``with LeaseLock(uri, ttl_s=900, wait_s=600): ...``; ``heartbeat()`` while working."""

    def __init__(self, uri: str, ttl_s: float = 900.0, wait_s: float = 600.0, poll_s: float = 0.25):
        self.uri = uri
        self.fs, self.path = storage.fs_and_path(uri)
        self.ttl_s = float(ttl_s)
        self.wait_s = float(wait_s)
        self.poll_s = float(poll_s)
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.acquired_at: float | None = None
        self.waited_s = 0.0
        self.broke_stale: list[str] = []

    # ------------------------------------------------------------------ file helpers
    def _record(self) -> bytes:
        now = time.time()
        return json.dumps({"token": self.token, "host": self.host, "pid": os.getpid(), "heartbeat": now,
                           "acquired": self.acquired_at or now}).encode()

    def _read(self) -> tuple[Holder | None, float | None, bool]:
        """(holder, file age in s, exists). A just-created file may still be empty: holder None."""
        self.fs.invalidate_cache(self.path)
        try:
            with self.fs.open(self.path, "rb") as f:
                raw = f.read()
            info = self.fs.info(self.path)
        except FileNotFoundError:
            return None, None, False
        from lift_core.rescore.store import modified_time

        when = modified_time(info)
        return Holder.parse(raw), (time.time() - when.timestamp()) if when else None, True

    def _try_create(self) -> bool:
        parent = self.path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        try:
            with self.fs.open(self.path, "xb") as f:
                f.write(self._record())
        except FileExistsError:
            return False
        except OSError as err:  # S3 answers a failed precondition with 412
            if "PreconditionFailed" in str(err) or "412" in str(err):
                return False
            raise
        return True

    def _is_stale(self, holder: Holder | None, age: float | None) -> bool:
        if holder is None:  # unreadable or still being written: judge by the file's age
            return age is not None and age > self.ttl_s
        if time.time() - holder.heartbeat > self.ttl_s:
            return True
        return holder.host == self.host and holder.pid != os.getpid() and not _pid_alive(holder.pid)

    def _break(self, holder: Holder | None) -> None:
        """Remove a stale lock; only the waiter that creates the breaker file for it may."""
        stale_token = holder.token if holder else "unreadable"
        breaker = LeaseLock(f"{self.uri}.break-{stale_token}", ttl_s=float("inf"), wait_s=0)
        if not breaker._try_create():
            return  # someone else is breaking it
        current, _, exists = self._read()
        if exists and (current.token if current else "unreadable") == stale_token:
            self.fs.rm(self.path)
            self.broke_stale.append(holder.describe() if holder else "unreadable lock file")

    # ------------------------------------------------------------------ API
    def acquire(self) -> "LeaseLock":
        start = time.monotonic()
        while True:
            if self._try_create():
                self.acquired_at = time.time()
                self.waited_s = time.monotonic() - start
                return self
            holder, age, exists = self._read()
            if exists and self._is_stale(holder, age):
                self._break(holder)
                continue
            if time.monotonic() - start >= self.wait_s:
                who = holder.describe() if holder else "a holder still writing the lock file"
                raise LockTimeout(f"{self.uri} is held by {who}; waited {self.wait_s:.0f}s "
                                  "(another rescore run is in progress)")
            time.sleep(self.poll_s)

    def heartbeat(self) -> None:
        """Refresh the lease; raises ``LockLost`` if the lock is no longer ours."""
        holder, _, _ = self._read()
        if holder is None or holder.token != self.token:
            raise LockLost(f"lost the lock {self.uri} (now {holder.describe() if holder else 'free'})")
        storage.write_bytes_atomic(self.uri, self._record())

    def release(self) -> None:
        holder, _, exists = self._read()
        if exists and holder is not None and holder.token == self.token:
            self.fs.rm(self.path)
        self.acquired_at = None

    def __enter__(self) -> "LeaseLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
