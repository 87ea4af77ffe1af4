"""Verified, resumable checkpoints on any fsspec store.

A checkpoint is ``<out>/checkpoints/step-NNNNNN/`` holding the trainable weights (safetensors), the
optimizer and LR scheduler states, the train log so far, ``state.json``, and ``manifest.json``,
written LAST: every other file with its size and sha256. A folder whose manifest is missing, or whose
files do not match it, is incomplete or corrupt and is never resumed from; resume falls back to the
newest intact checkpoint and logs which ones it skipped and why.

Optimizer and scheduler states are loaded with ``torch.load(weights_only=True)``: the run root may be
a shared bucket, and a pickle from it would run code on every worker.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import pyarrow as pa

from lift_core import storage

log = logging.getLogger("lift.train")
T = TypeVar("T")

MANIFEST = "manifest.json"
WEIGHTS, OPTIMIZER, SCHEDULER, TRAIN_LOG, STATE = (
    "trainable.safetensors", "optimizer.pt", "lr_scheduler.pt", "train_log.parquet", "state.json")


class CorruptCheckpoint(RuntimeError):
    """A checkpoint file is missing, truncated or altered; the message names the file."""


def checkpoints_dir(out_uri: str) -> str:
    return storage.join(out_uri, "checkpoints")


STEP_DIR = re.compile(r"^step-(\d+)$")
_reported: set[str] = set()  # entries already named as not checkpoints, once per process


def _step_of(path: str) -> int:
    return int(STEP_DIR.match(path.rstrip("/").rsplit("/", 1)[-1]).group(1))


def _step_dirs(out_uri: str) -> tuple[Any, list[str]]:
    """(filesystem, checkpoint folders newest first).

    Only folders named ``step-<digits>`` are checkpoints. Anything else in ``checkpoints/`` (a
    ``step-000040.bak`` copy, a stray file) is left alone, and named once in a warning."""
    fs, path = storage.fs_and_path(checkpoints_dir(out_uri))
    fs.invalidate_cache(path)  # s3fs caches listings: workers wrote and pruned checkpoints since
    if not fs.exists(path):
        return fs, []
    dirs = []
    for entry in fs.ls(path, detail=True):
        name = entry["name"].rstrip("/")
        if STEP_DIR.match(name.rsplit("/", 1)[-1]) and entry.get("type") == "directory":
            dirs.append(name)
        elif (uri := storage.to_uri(fs, name)) not in _reported:
            _reported.add(uri)
            kind = "a folder" if entry.get("type") == "directory" else "a file"
            log.warning("ignoring %s in the checkpoints folder: %s, not a checkpoint (those are folders "
                        "named step-<number>)", uri, kind)
    return fs, sorted(dirs, key=_step_of, reverse=True)


def problem(fs: Any, path: str) -> str | None:
    """Why the checkpoint folder ``path`` cannot be used (cheap: the manifest and the file sizes), or None."""
    manifest_path = f"{path}/{MANIFEST}"
    if not fs.exists(manifest_path):
        return f"no {MANIFEST} (the writer died before finishing it)"
    try:
        files = json.loads(fs.cat_file(manifest_path))["files"]
    except Exception as err:  # noqa: BLE001 - any unreadable manifest means the same thing
        return f"unreadable {MANIFEST}: {err}"
    for name, meta in files.items():
        try:
            size = fs.size(f"{path}/{name}")
        except FileNotFoundError:
            return f"{name} is missing"
        if size != meta["size"]:
            return f"{name} has {size} bytes, the manifest says {meta['size']}"
    return None


def complete_checkpoints(out_uri: str, log_skipped: bool = False) -> list[tuple[int, str]]:
    """(step, uri) of every checkpoint that passes the cheap check, newest first."""
    fs, dirs = _step_dirs(out_uri)
    good = []
    for d in dirs:
        why = problem(fs, d)
        if why is None:
            good.append((_step_of(d), storage.to_uri(fs, d)))
        elif log_skipped:
            log.warning("skipping checkpoint %s: %s", storage.to_uri(fs, d), why)
    return good


def latest_checkpoint(out_uri: str) -> tuple[int, str] | None:
    """(step, uri) of the newest checkpoint whose manifest and file sizes match."""
    good = complete_checkpoints(out_uri)
    return good[0] if good else None


# --------------------------------------------------------------------------- write
def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode()


def torch_bytes(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(out_uri: str, step: int, weights: dict[str, Any], optimizer_state: dict[str, Any],
                    scheduler_state: dict[str, Any], state: dict[str, Any], train_log: pa.Table, keep: int) -> str:
    """Write checkpoint ``step`` (manifest last) and keep only the newest ``keep`` complete ones."""
    from safetensors.torch import save

    ck = storage.join(checkpoints_dir(out_uri), f"step-{step:06d}")
    fs, manifest_path = storage.fs_and_path(storage.join(ck, MANIFEST))
    if fs.exists(manifest_path):  # a rewrite of this step is incomplete until it ends
        fs.rm(manifest_path)
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(train_log, sink)
    blobs = {
        WEIGHTS: save(weights),
        OPTIMIZER: torch_bytes(optimizer_state),
        SCHEDULER: torch_bytes(scheduler_state),
        TRAIN_LOG: sink.getvalue(),
        STATE: _json_bytes(state),
    }
    for name, blob in blobs.items():
        storage.write_bytes_atomic(storage.join(ck, name), blob)
    manifest = {"step": step, "files": {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                                        for n, b in blobs.items()}}
    storage.write_bytes_atomic(storage.join(ck, MANIFEST), _json_bytes(manifest))
    prune_checkpoints(out_uri, keep)
    return ck


def prune_checkpoints(out_uri: str, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints, and the broken ones older than those."""
    fs, dirs = _step_dirs(out_uri)
    good = [d for d in dirs if problem(fs, d) is None]
    if not good:
        return
    kept = good[: max(1, keep)]
    oldest_kept = _step_of(kept[-1])
    for d in dirs:
        if d not in kept and _step_of(d) < oldest_kept:
            fs.rm(d, recursive=True)


# --------------------------------------------------------------------------- read
@dataclass
class Checkpoint:
    step: int
    uri: str
    weights: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    train_log: list[dict[str, Any]]
    state: dict[str, Any]


def _verified_blobs(uri: str) -> tuple[int, dict[str, bytes]]:
    """(step, every file's bytes) of the checkpoint at ``uri``, each checked against the manifest's size
    and sha256; raises ``CorruptCheckpoint`` naming the file otherwise."""
    manifest_uri = storage.join(uri, MANIFEST)
    try:
        manifest = json.loads(storage.read_bytes(manifest_uri))
        files, step = manifest["files"], int(manifest["step"])
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{manifest_uri} is missing: the checkpoint is incomplete") from None
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptCheckpoint(f"{manifest_uri} is unreadable ({type(err).__name__}: {err})") from None
    blobs: dict[str, bytes] = {}
    for name, meta in files.items():
        file_uri = storage.join(uri, name)
        try:
            blob = storage.read_bytes(file_uri)
        except FileNotFoundError:
            raise CorruptCheckpoint(f"{file_uri} is missing") from None
        if len(blob) != meta["size"] or hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            raise CorruptCheckpoint(f"{file_uri} does not match its manifest "
                                    f"({len(blob)} bytes, expected {meta['size']}, or another sha256)")
        blobs[name] = blob
    return step, blobs


def read_checkpoint(uri: str) -> Checkpoint:
    """Every file of the checkpoint at ``uri``, each checked against the manifest's sha256."""
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import load

    step, blobs = _verified_blobs(uri)

    def torch_state(name: str) -> Any:
        try:
            return torch.load(io.BytesIO(blobs[name]), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a pickle that is not plain tensors and containers
            raise CorruptCheckpoint(f"{storage.join(uri, name)} cannot be loaded safely: {err}") from None

    return Checkpoint(
        step=step, uri=uri, weights=load(blobs[WEIGHTS]), optimizer=torch_state(OPTIMIZER),
        scheduler=torch_state(SCHEDULER), train_log=pq.read_table(io.BytesIO(blobs[TRAIN_LOG])).to_pylist(),
        state=json.loads(blobs[STATE]),
    )


def _newest_passing(out_uri: str, read: Callable[[str], T], on_skip: Callable[[str, str], None] | None) -> T | None:
    """``read`` of the newest step folder that passes the size check and that ``read`` (a full check)
    accepts; each one skipped is reported with why (default: a warning)."""
    report = on_skip or (lambda uri, why: log.warning("skipping checkpoint %s: %s", uri, why))
    fs, dirs = _step_dirs(out_uri)
    for d in dirs:
        uri = storage.to_uri(fs, d)
        why = problem(fs, d)
        if why is None:
            try:
                return read(uri)
            except CorruptCheckpoint as err:
                why = str(err)
        report(uri, why)
    return None


def read_newest_intact(out_uri: str, on_skip: Callable[[str, str], None] | None = None) -> Checkpoint | None:
    """The newest checkpoint that passes the full (hash) check; each one skipped is reported with why."""
    return _newest_passing(out_uri, read_checkpoint, on_skip)


def resume_point(out_uri: str, on_skip: Callable[[str, str], None] | None = None) -> tuple[int, str] | None:
    """(step, uri) of the checkpoint a run at ``out_uri`` resumes from; None: it starts from step 0.

    The checkpoint ``read_newest_intact`` (what every worker loads) picks: the newest whose files all
    match their manifest's sizes and sha256s, checked the same way but without decoding the tensors,
    so what the driver announces is the step the workers really resume from. Each one skipped is
    reported with why (default: a warning)."""
    return _newest_passing(out_uri, lambda uri: (_verified_blobs(uri)[0], uri), on_skip)


def resume_message(out_uri: str) -> str:
    """``resuming from step N (<uri>)`` or ``starting from step 0 (no intact checkpoint)``: the log line
    of a run about to start, naming the step it really resumes from."""
    found = resume_point(out_uri)
    return f"resuming from step {found[0]} ({found[1]})" if found else "starting from step 0 (no intact checkpoint)"
