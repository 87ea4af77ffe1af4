"""Load a T2V pipeline (hub id or local directory) with an optional aligned LoRA or fine-tuned denoiser."""

from __future__ import annotations

import os
from typing import Any

from lift_core import storage
from lift_core.t2v.spec import T2VModelSpec, get_spec

LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"
FULL_WEIGHTS_SUBDIR = "transformer"


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
        spec.load_lora(pipe, storage.local_dir(lora, LORA_WEIGHTS_FILE))
    if weights:
        path = os.path.join(storage.local_dir(weights, f"{FULL_WEIGHTS_SUBDIR}/config.json"), FULL_WEIGHTS_SUBDIR)
        spec.set_denoiser(pipe, spec.load_denoiser(path, dtype).to(device))
    return pipe, spec


__all__ = ["FULL_WEIGHTS_SUBDIR", "LORA_WEIGHTS_FILE", "load_t2v"]
