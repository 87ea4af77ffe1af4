"""Load a T2V pipeline (hub id or local directory) with an optional aligned LoRA or fine-tuned denoiser."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Any

from lift_core import storage
from lift_core.t2v.spec import T2VModelSpec, get_spec

LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"
FULL_WEIGHTS_SUBDIR = "transformer"


def local_dir(uri: str, marker: str) -> str:
    """A local directory with the contents of ``uri`` (remote dirs are copied once into a cache)."""
    local = storage.local_path(uri)
    if local is not None:
        if not os.path.exists(os.path.join(local, marker)):
            raise FileNotFoundError(f"{uri} has no {marker}")
        return local
    dest = os.path.join(tempfile.gettempdir(), "lift-t2v-weights", storage.hash_parts(uri, storage.fingerprint_uri(uri)))
    if not os.path.exists(os.path.join(dest, marker)):
        fs, path = storage.fs_and_path(uri)
        if not fs.exists(f"{path.rstrip('/')}/{marker}"):
            raise FileNotFoundError(f"{uri} has no {marker}")
        tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
        fs.get(path.rstrip("/") + "/", tmp, recursive=True)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        try:
            os.rename(tmp, dest)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_t2v(
    model: str,
    family: str = "cogvideox",
    dtype: str = "float32",
    device: str = "cpu",
    lora: str | None = None,
    weights: str | None = None,
) -> tuple[Any, T2VModelSpec]:
    """The pipeline of ``model`` plus, optionally, an aligned LoRA (diffusers format) or full denoiser weights."""
    spec = get_spec(family)
    pipe = spec.load_pipeline(model, dtype=dtype, device=device)
    if lora and weights:
        raise ValueError("give either a LoRA or full weights, not both")
    if lora:
        spec.load_lora(pipe, local_dir(lora, LORA_WEIGHTS_FILE))
    if weights:
        path = os.path.join(local_dir(weights, f"{FULL_WEIGHTS_SUBDIR}/config.json"), FULL_WEIGHTS_SUBDIR)
        spec.set_denoiser(pipe, spec.load_denoiser(path, dtype).to(device))
    return pipe, spec


__all__ = ["FULL_WEIGHTS_SUBDIR", "LORA_WEIGHTS_FILE", "load_t2v", "local_dir"]
