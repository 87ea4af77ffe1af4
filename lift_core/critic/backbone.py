"""Loading a video VLM critic and turning (video, caption, dimension[, answer]) into model inputs.

Any transformers-native video VLM loads through ``AutoProcessor`` + ``AutoModelForImageTextToText``
(+ ``PeftModel.from_pretrained`` for a LoRA adapter). What differs between backbones sits behind
``CriticSpec``: how a prompt is rendered with the chat template, the video processor kwargs, extra
inputs the model needs (Qwen2.5-VL's ``second_per_grid_ts``) and the label token ids. Qwen2-VL and
Qwen2.5-VL are registered; ``register_spec`` adds others.

Batches:
- scoring (``answers=None``): LEFT padding and the generation prompt, so ``logits[:, -1]`` is the
  first answer position for every row;
- training (``answers`` given): RIGHT padding, the answer ``"Label. reason"`` plus the end-of-turn
  token appended, and ``labels`` = the input ids on those answer tokens, -100 everywhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from lift_core import storage
from lift_core.config import DIMENSIONS, LABELS
from lift_core.critic.prompts import build_user_text

IGNORE_INDEX = -100


@dataclass(frozen=True)
class CriticSpec:
    """What is specific to one backbone family."""

    name: str
    end_of_turn: str = "<|im_end|>"  # appended to training answers, so generation learns to stop
    default_fps: float = 2.0  # per-frame time step the processor is told about (Qwen2.5-VL's temporal rope)
    merge_size: int = 2
    patch_size: int = 14
    extra_video_inputs: tuple[str, ...] = ()  # model inputs beyond pixel_values_videos / video_grid_thw
    model_types: tuple[str, ...] = field(default_factory=tuple)

    def messages(self, caption: str, dimension: str) -> list[dict[str, Any]]:
        """The user turn: the video, then the caption followed by the question."""
        return [
            {
                "role": "user",
                "content": [{"type": "video"}, {"type": "text", "text": build_user_text(caption, dimension)}],
            }
        ]

    def prompt_text(self, processor: Any, caption: str, dimension: str) -> str:
        """The chat-templated prompt, ending with the generation prompt (the assistant turn opens)."""
        return processor.apply_chat_template(
            self.messages(caption, dimension), tokenize=False, add_generation_prompt=True
        )

    def side_multiple(self) -> int:
        return self.patch_size * self.merge_size

    def video_kwargs(self, frame_size: tuple[int, int] | None, fps: float | None = None) -> dict[str, Any]:
        """Video processor kwargs. With ``frame_size``: frames are resized to exactly that size
        (rounded to multiples of patch*merge), never up-scaled to the processor's default minimum
        pixel count (about 316 px for Qwen2-VL)."""
        kwargs: dict[str, Any] = {"do_sample_frames": False}
        if frame_size is not None:
            m = self.side_multiple()
            h = max(m, round(frame_size[0] / m) * m)
            w = max(m, round(frame_size[1] / m) * m)
            kwargs["size"] = {"shortest_edge": h * w, "longest_edge": h * w}
            kwargs["cap_pixels_per_frame"] = False  # the size is explicit: no total-pixel budget applies
        return kwargs

    def label_token_ids(self, processor: Any) -> dict[str, int]:
        """The id of the first token of each label as it is generated right after the prompt."""
        tok = processor.tokenizer
        prompt = self.prompt_text(processor, "a caption", DIMENSIONS[0])
        base = tok(prompt, add_special_tokens=False)["input_ids"]
        out: dict[str, int] = {}
        for label in LABELS:
            ids = tok(prompt + label, add_special_tokens=False)["input_ids"]
            if ids[: len(base)] != base or len(ids) == len(base):
                raise ValueError(f"{self.name}: label {label!r} does not tokenize as a continuation of the prompt")
            out[label] = int(ids[len(base)])
        if len(set(out.values())) != len(out):
            raise ValueError(f"{self.name}: the labels share their first token: {out}")
        return out


SPECS: dict[str, CriticSpec] = {}


def register_spec(spec: CriticSpec) -> CriticSpec:
    SPECS[spec.name] = spec
    return spec


register_spec(CriticSpec(name="qwen2-vl", model_types=("qwen2_vl",)))
register_spec(CriticSpec(name="qwen2.5-vl", extra_video_inputs=("second_per_grid_ts",), model_types=("qwen2_5_vl",)))


def get_spec(backbone: str) -> CriticSpec:
    try:
        return SPECS[backbone]
    except KeyError:
        raise ValueError(f"unknown critic backbone {backbone!r}; registered: {sorted(SPECS)}") from None


@dataclass
class LoadedCritic:
    model: Any
    processor: Any
    spec: CriticSpec
    label_token_ids: dict[str, int]
    device: Any
    frame_size: tuple[int, int] | None = None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_processor(model: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model)


def load_base_model(model: str, device: str | Any = "cpu", dtype: Any = None):
    """``AutoModelForImageTextToText`` (the model WITH its language-model head) on ``device``."""
    import torch
    from transformers import AutoModelForImageTextToText

    if dtype is None:
        dtype = torch.float32 if str(device).startswith("cpu") else torch.bfloat16
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return AutoModelForImageTextToText.from_pretrained(model, dtype=dtype).to(device)


def load_critic(
    model: str,
    adapter: str | None = None,
    *,
    backbone: str = "qwen2-vl",
    device: str | Any = None,
    frame_size: tuple[int, int] | None = (56, 56),
    dtype: Any = None,
    is_trainable: bool = False,
) -> LoadedCritic:
    """Load a critic: the base ``model`` (hub id or local dir), plus a PEFT ``adapter`` dir when given."""
    spec = get_spec(backbone)
    device = device or default_device()
    processor = load_processor(model)
    net = load_base_model(model, device, dtype)
    model_type = getattr(net.config, "model_type", "")
    if spec.model_types and model_type not in spec.model_types:
        raise ValueError(f"critic {model}: model_type {model_type!r} is not a {backbone} model ({spec.model_types})")
    if adapter is not None:
        from peft import PeftModel

        if not os.path.exists(os.path.join(adapter, "adapter_config.json")):
            raise FileNotFoundError(f"not a PEFT adapter dir (no adapter_config.json): {adapter}")
        net = PeftModel.from_pretrained(net, adapter, is_trainable=is_trainable).to(device)
    if not is_trainable:
        net.eval()
    return LoadedCritic(net, processor, spec, spec.label_token_ids(processor), device, frame_size)


def _as_videos(videos: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for i, v in enumerate(videos):
        a = np.asarray(v)
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"video {i}: expected uint8 [T,H,W,3], got {a.dtype} {a.shape}")
        if a.shape[0] % 2:  # the temporal patch is 2 frames: repeat the last frame, as the processor would
            a = np.concatenate([a, a[-1:]], axis=0)
        out.append(a)
    return out


def encode_batch(
    loaded: LoadedCritic,
    videos: Sequence[np.ndarray],
    captions: Sequence[str],
    dimensions: Sequence[str],
    answers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Model inputs (CPU tensors) for one row per (video, caption, dimension[, answer]).

    ``answers=None``: scoring/generation inputs, left-padded, ending with the generation prompt.
    ``answers``: training inputs, right-padded, with ``labels`` masked to the answer tokens.
    """
    n = len(videos)
    if not (len(captions) == len(dimensions) == n) or (answers is not None and len(answers) != n):
        raise ValueError(
            f"encode_batch: {n} videos, {len(captions)} captions, {len(dimensions)} dimensions"
            + (f", {len(answers)} answers" if answers is not None else "")
        )
    if n == 0:
        raise ValueError("encode_batch: empty batch")
    spec, proc = loaded.spec, loaded.processor
    tok = proc.tokenizer
    prompts = [spec.prompt_text(proc, c, d) for c, d in zip(captions, dimensions)]
    training = answers is not None
    texts = [p + a + spec.end_of_turn for p, a in zip(prompts, answers)] if training else prompts
    vids = _as_videos(videos)
    kwargs = spec.video_kwargs(loaded.frame_size)
    if spec.extra_video_inputs:
        kwargs["fps"] = spec.default_fps
    old_side = tok.padding_side
    tok.padding_side = "right" if training else "left"
    try:
        enc = proc(text=texts, videos=vids, padding=True, return_tensors="pt", videos_kwargs=kwargs)
    finally:
        tok.padding_side = old_side
    inputs = dict(enc)
    if training:
        inputs["labels"] = answer_labels(inputs["input_ids"], inputs["attention_mask"], [
            tok(a + spec.end_of_turn, add_special_tokens=False)["input_ids"] for a in answers
        ])
    return inputs


def answer_labels(input_ids: Any, attention_mask: Any, answer_ids: Sequence[Sequence[int]]) -> Any:
    """``labels``: ``input_ids`` on each row's trailing answer tokens (right padding), -100 elsewhere.

    Raises when a row does not end with its answer's tokens (a tokenizer merge across the boundary
    would otherwise silently train on the wrong positions)."""
    import torch

    labels = torch.full_like(input_ids, IGNORE_INDEX)
    lengths = attention_mask.sum(dim=1).tolist()
    for i, (length, ans) in enumerate(zip(lengths, answer_ids)):
        k = len(ans)
        start = int(length) - k
        if start <= 0 or input_ids[i, start:length].tolist() != list(ans):
            raise ValueError(f"row {i}: the tokenized text does not end with its answer tokens")
        labels[i, start:length] = input_ids[i, start:length]
    return labels


def to_device(inputs: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in inputs.items()}


# --------------------------------------------------------------------------- critic identity
_HASH_LIMIT = 512 << 20  # base weights larger than this are identified by names and sizes, not bytes


def _hash_files(h: "hashlib._Hash", root: str, names: Sequence[str], by_content: bool) -> None:
    fs, path = storage.fs_and_path(root)
    for name in names:
        p = f"{path.rstrip('/')}/{name}"
        h.update(name.encode())
        if by_content:
            with fs.open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(str(fs.size(p)).encode())


def base_model_identity(model: str) -> str:
    """A content identity of a local model dir (config + weights), or the hub id itself."""
    fs, path = storage.fs_and_path(model)
    if storage.local_path(model) is None and not fs.exists(path):
        return f"hub:{model}"
    if not fs.isdir(path):
        return f"hub:{model}"
    names = sorted(
        p[len(path.rstrip("/")) + 1:] for p in fs.find(path)
        if p.endswith((".safetensors", ".bin", "config.json", ".safetensors.index.json"))
    )
    total = sum(fs.size(f"{path.rstrip('/')}/{n}") for n in names)
    h = hashlib.sha256(b"dir")
    _hash_files(h, model, names, by_content=total <= _HASH_LIMIT)
    return h.hexdigest()


def critic_id(model: str, adapter_dir: str | None) -> str:
    """16 hex chars identifying a critic: its adapter's weights and config plus the base model."""
    h = hashlib.sha256()
    h.update(base_model_identity(model).encode())
    if adapter_dir is not None:
        cfg_uri = storage.join(adapter_dir, "adapter_config.json")
        if not storage.exists(cfg_uri):
            raise FileNotFoundError(f"not a PEFT adapter dir (no adapter_config.json): {adapter_dir}")
        adapter_cfg = storage.read_json(cfg_uri)
        adapter_cfg.pop("base_model_name_or_path", None)  # a path, different on every machine
        adapter_cfg.pop("revision", None)
        h.update(json.dumps(adapter_cfg, sort_keys=True).encode())
        fs, path = storage.fs_and_path(adapter_dir)
        weights = sorted(
            p[len(path.rstrip("/")) + 1:] for p in fs.find(path) if p.endswith((".safetensors", ".bin"))
        )
        if not weights:
            raise FileNotFoundError(f"adapter dir has no weights: {adapter_dir}")
        _hash_files(h, adapter_dir, weights, by_content=True)
    else:
        h.update(b"no-adapter")
    return h.hexdigest()[:16]


