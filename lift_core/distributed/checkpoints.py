"""What the critic and T2V trainers share: fsspec checkpoints, a resumable data order, output dirs.

A checkpoint is ``<out>/checkpoints/step-NNNNNN/`` holding the trainable weights (safetensors), the
optimizer and LR scheduler states, the loss log so far, and ``state.json``, written last: a folder
without it is incomplete (the writer died) and is never resumed from.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from lift_core import storage


def checkpoints_dir(out_uri: str) -> str:
    return storage.join(out_uri, "checkpoints")


def _complete(fs: Any, path: str) -> list[str]:
    entries = (e.rstrip("/") for e in fs.ls(path, detail=False))
    return sorted(e for e in entries if e.rsplit("/", 1)[-1].startswith("step-") and fs.exists(f"{e}/state.json"))


def latest_checkpoint(out_uri: str) -> tuple[int, str] | None:
    """(step, uri) of the newest complete checkpoint (one with ``state.json``)."""
    fs, path = storage.fs_and_path(checkpoints_dir(out_uri))
    if not fs.exists(path):
        return None
    complete = _complete(fs, path)
    if not complete:
        return None
    newest = max(complete, key=lambda e: int(e.rsplit("/", 1)[-1].split("-", 1)[1]))
    return int(newest.rsplit("/", 1)[-1].split("-", 1)[1]), storage.to_uri(fs, newest)


def torch_bytes(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def torch_load(uri: str) -> Any:
    import torch

    return torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=False)


def save_checkpoint(out_uri: str, step: int, weights: dict[str, Any], optimizer: Any, scheduler: Any,
                    state: dict[str, Any], log: pa.Table, keep: int) -> str:
    """Write checkpoint ``step`` and keep only the newest ``keep`` complete ones."""
    from safetensors.torch import save

    ck = storage.join(checkpoints_dir(out_uri), f"step-{step:06d}")
    storage.write_bytes_atomic(storage.join(ck, "trainable.safetensors"), save(weights))
    storage.write_bytes_atomic(storage.join(ck, "optimizer.pt"), torch_bytes(optimizer.state_dict()))
    storage.write_bytes_atomic(storage.join(ck, "lr_scheduler.pt"), torch_bytes(scheduler.state_dict()))
    storage.write_table(storage.join(ck, "train_log.parquet"), log)
    storage.write_json(storage.join(ck, "state.json"), state)  # last: marks the checkpoint complete
    prune_checkpoints(out_uri, keep)
    return ck


def prune_checkpoints(out_uri: str, keep: int) -> None:
    fs, path = storage.fs_and_path(checkpoints_dir(out_uri))
    complete = _complete(fs, path)
    for old in complete[: max(0, len(complete) - max(1, keep))]:
        fs.rm(old, recursive=True)


class DataOrder:
    """Position p of the training stream -> example index: one seeded permutation per epoch.

    A function of (seed, position) only, so a resumed run (under any world size) sees exactly the
    examples the uninterrupted run would have seen."""

    def __init__(self, n: int, seed: int):
        if n <= 0:
            raise ValueError("no training examples")
        self.n, self.seed = n, seed
        self._perms: dict[int, np.ndarray] = {}

    def __call__(self, position: int) -> int:
        epoch, i = divmod(int(position), self.n)
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return int(self._perms[epoch][i])


def write_dir(out_uri: str, write: Callable[[str], None]) -> str:
    """Run ``write(local_dir)`` and put the result at ``out_uri`` (renamed into place when local)."""
    local = storage.local_path(out_uri)
    if local is not None:
        tmp = f"{local}.tmp-{uuid.uuid4().hex[:8]}"
        write(tmp)
        if os.path.exists(local):
            shutil.rmtree(local)
        os.rename(tmp, local)
        return out_uri
    with tempfile.TemporaryDirectory(prefix="lift-out-") as tmp:
        write(tmp)
        fs, path = storage.fs_and_path(out_uri)
        fs.put(tmp.rstrip("/") + "/", path.rstrip("/"), recursive=True)
    return out_uri
