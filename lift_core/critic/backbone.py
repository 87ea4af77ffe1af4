"""Critic backbones: one interface, a registry by name, and the functions the recipes call.

A backbone is everything specific to one video-VLM family, owned by the model (finetrainers'
``ModelSpecification`` is the pattern): how it loads from a hub id or a local directory, how a
prompt is rendered with its chat template, how a batch of videos and texts becomes model inputs,
which token ids the labels start with, how the logits at the first answer position are read and
how a rationale is generated. ``critic.backbone`` names a registered backbone; the built-in ones
(``qwen2-vl``, ``qwen2.5-vl``, ``vila``) live in ``lift_core.critic.backbones``. A new family is one module
there with a ``CriticBackbone`` subclass and a ``register_backbone`` call; it need not load through
``AutoModel`` (the interface only asks for ``load_processor`` and ``load_model``).

This module imports neither torch nor transformers at import time, so the config can validate a
backbone name against the registry cheaply.

What stays the same for every backbone (here, not in the families):

- scoring batches (``answers=None``): LEFT padding and the generation prompt, so the last position
  is the first answer position of every row;
- training batches (``answers`` given): RIGHT padding, the answer ``"Label. reason"`` plus the
  backbone's end-of-turn token appended, and ``labels`` = the input ids on those answer tokens,
  -100 everywhere else;
- a PEFT adapter on top of the loaded base model, and the critic's identity (``critic_id``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from lift_core import storage
from lift_core.config import DIMENSIONS, LABELS, TinyCriticConfig
from lift_core.critic.adapter_files import check_adapter

IGNORE_INDEX = -100


# --------------------------------------------------------------------------- the interface
class CriticBackbone(ABC):
    """What is specific to one critic model family. Instances are stateless; one per name."""

    name: ClassVar[str]
    # Appended to training answers so that generation learns to stop after the reason.
    end_of_turn: ClassVar[str]
    # What the template puts between the prompt and the answer's first word (vicuna's "ASSISTANT: ").
    answer_prefix: ClassVar[str] = ""

    # ------------------------------------------------------------------ loading
    @abstractmethod
    def load_processor(self, model: str) -> Any:
        """The processor of ``model`` (hub id or local dir); it exposes the tokenizer as ``.tokenizer``."""

    @abstractmethod
    def load_model(self, model: str, device: Any, dtype: Any) -> Any:
        """The model WITH its language-model head on ``device``; raises when ``model`` is another family."""

    def load_adapter(self, model: Any, adapter: str, device: Any, is_trainable: bool) -> Any:
        """``model`` with the PEFT adapter dir ``adapter`` on top (a family may load its own format)."""
        from peft import PeftModel

        with peft_probe_quiet():
            return PeftModel.from_pretrained(model, adapter, is_trainable=is_trainable).to(device)

    # ------------------------------------------------------------------ prompts and batches
    def prompt_text(self, processor: Any, caption: str, dimension: str) -> str:
        """The chat-templated user turn (video, caption, question), ending where the answer begins."""
        from lift_core.critic.prompts import build_user_text

        return self.chat_prompt(processor, build_user_text(caption, dimension))

    @abstractmethod
    def chat_prompt(self, processor: Any, user_text: str) -> str:
        """The chat-templated user turn of the video and ``user_text``, ending where the answer begins
        (LiFT's prompts and the demo VLM's pre-training prompts alike)."""

    @abstractmethod
    def encode(
        self,
        processor: Any,
        videos: Sequence[np.ndarray],
        texts: Sequence[str],
        *,
        padding_side: str,
        frame_size: tuple[int, int] | None,
    ) -> dict[str, Any]:
        """Model inputs (CPU tensors, with ``input_ids`` and ``attention_mask``) for one row per
        (uint8 ``[T, H, W, 3]`` video, text), padded on ``padding_side``."""

    def answer_token_ids(self, processor: Any, answer: str) -> list[int]:
        """The token ids a training text ends with: the answer and the end-of-turn token."""
        return list(processor.tokenizer(answer + self.end_of_turn, add_special_tokens=False)["input_ids"])

    def label_token_ids(self, processor: Any) -> dict[str, int]:
        """The id of the first token of each label as it is generated right after the prompt."""
        tok = processor.tokenizer
        prompt = self.prompt_text(processor, "a caption", DIMENSIONS[0])
        base = tok(prompt, add_special_tokens=False)["input_ids"]
        out: dict[str, int] = {}
        for label in LABELS:
            ids = tok(prompt + self.answer_prefix + label, add_special_tokens=False)["input_ids"]
            if ids[: len(base)] != base or len(ids) == len(base):
                raise ValueError(f"{self.name}: label {label!r} does not tokenize as a continuation of the prompt")
            out[label] = int(ids[len(base)])
        if len(set(out.values())) != len(out):
            raise ValueError(f"{self.name}: the labels share their first token: {out}")
        return out

    # ------------------------------------------------------------------ forward and generation
    def answer_logits(self, model: Any, inputs: dict[str, Any]) -> Any:
        """``[B, vocab]`` logits at the first answer position of a left-padded scoring batch."""
        # Only the last position: the full [B, L, vocab] tensor is huge on real models.
        return model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]

    def generate(
        self,
        model: Any,
        processor: Any,
        inputs: dict[str, Any],
        *,
        first_token_ids: Sequence[int],
        max_new_tokens: int,
    ) -> tuple[Any, list[str]]:
        """Greedy answers whose first token is one of ``first_token_ids`` (the label tokens).

        Returns the raw ``[B, vocab]`` logits of the first generated step (the first answer position)
        and the decoded answers."""
        from transformers import LogitsProcessorList

        tok = processor.tokenizer
        prompt_len = self.generated_offset(inputs)
        out = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=max(1, int(max_new_tokens)),
            logits_processor=LogitsProcessorList([FirstTokenIn(prompt_len, first_token_ids)]),
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
        return out.logits[0], tok.batch_decode(out.sequences[:, prompt_len:], skip_special_tokens=True)

    def generated_offset(self, inputs: dict[str, Any]) -> int:
        """Where the new tokens start in ``generate``'s sequences (0 for a model generating from embeddings)."""
        return int(inputs["input_ids"].shape[1])

    # ------------------------------------------------------------------ tiny model (optional)
    def build_tiny(self, cfg: TinyCriticConfig) -> tuple[Any, Any]:
        """A randomly initialised (model, processor) of ``cfg``'s sizes, with a locally trained tokenizer;
        ``lift_core.critic.builder`` saves them. Backbones that cannot build one leave this as is."""
        raise NotImplementedError(f"critic backbone {self.name!r} cannot build a tiny model")

    @property
    def builds_tiny(self) -> bool:
        return type(self).build_tiny is not CriticBackbone.build_tiny


class FirstTokenIn:
    """A logits processor: the first generated token must be one of ``token_ids``."""

    def __init__(self, prompt_len: int, token_ids: Sequence[int]):
        self.prompt_len = prompt_len
        self.token_ids = list(token_ids)

    def __call__(self, input_ids, scores):
        import torch

        if input_ids.shape[1] != self.prompt_len:
            return scores
        masked = torch.full_like(scores, float("-inf"))
        masked[:, self.token_ids] = scores[:, self.token_ids]
        return masked


# --------------------------------------------------------------------------- the registry
BACKBONES: dict[str, CriticBackbone] = {}


def register_backbone(backbone: CriticBackbone) -> CriticBackbone:
    """Make ``backbone`` selectable as ``critic.backbone: <backbone.name>``.

    The module that registers it must be imported wherever the critic loads (Ray actors included);
    the built-in backbones are imported by the registry itself."""
    known = BACKBONES.get(backbone.name)
    if known is not None and type(known) is not type(backbone):
        raise ValueError(f"critic backbone {backbone.name!r} is already registered as {type(known).__name__}")
    BACKBONES[backbone.name] = backbone
    return backbone


def _registered() -> dict[str, CriticBackbone]:
    import lift_core.critic.backbones  # noqa: F401  (the built-in backbones register on first import)

    return BACKBONES


def backbone_names(tiny: bool = False) -> list[str]:
    """The registered backbone names (with ``tiny``: those that can build a tiny model)."""
    return sorted(name for name, b in _registered().items() if b.builds_tiny or not tiny)


def get_backbone(name: str) -> CriticBackbone:
    try:
        return _registered()[name]
    except KeyError:
        raise ValueError(f"unknown critic backbone {name!r}; known: {backbone_names()}") from None


# --------------------------------------------------------------------------- a loaded critic
@dataclass
class LoadedCritic:
    model: Any
    processor: Any  # with ``.tokenizer``
    backbone: CriticBackbone
    label_token_ids: dict[str, int]
    device: Any
    frame_size: tuple[int, int] | None = None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """``dtype`` as a torch dtype; by default float32 on CPU and bfloat16 on an accelerator."""
    import torch

    if dtype is None:
        return torch.float32 if str(device).startswith("cpu") else torch.bfloat16
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


_LOAD_LOCK = threading.Lock()


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
    if adapter is not None:
        check_adapter(adapter)  # before the base loads: a damaged adapter is named, not a failed load
    family = get_backbone(backbone)
    device = device or default_device()
    # One load at a time in a process: from_pretrained builds on the meta device through process-wide
    # state, and two threads loading at once fail with "Cannot copy out of meta tensor".
    with _LOAD_LOCK:
        processor = family.load_processor(model)
        net = family.load_model(model, device, resolve_dtype(dtype, device))
        if adapter is not None:
            net = family.load_adapter(net, adapter, device, is_trainable)
    if not is_trainable:
        net.eval()
    return LoadedCritic(net, processor, family, family.label_token_ids(processor), device, frame_size)


@contextlib.contextmanager
def peft_probe_quiet():
    """Around peft wrapping a transformers model (``PeftModel``, ``get_peft_model``).

    peft probes ``model.is_gradient_checkpointing``, an alias that transformers (>= 4.57) deprecates with
    a FutureWarning on every read; the probe is peft's, not ours, and its answer is right either way.
    Only that message, from transformers' modeling_utils, and only here, is ignored."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning,
                                module=r"transformers\.modeling_utils")
        yield


def _checked_videos(videos: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for i, v in enumerate(videos):
        a = np.asarray(v)
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"video {i}: expected uint8 [T,H,W,3], got {a.dtype} {a.shape}")
        out.append(a)
    return out


# A caption is cut to this many tokens (at most half the tokenizer's ``model_max_length``) before its
# prompt is built: a second guard behind ingest's ``data.max_caption_chars``, so a caption that reaches
# the critic another way (``lift score`` on a JSON file, a notebook) never builds an unbounded sequence.
MAX_CAPTION_TOKENS = 1024


def bounded_caption(processor: Any, caption: str, max_tokens: int = MAX_CAPTION_TOKENS) -> str:
    """``caption`` itself when it fits the token limit, else the text of its first tokens."""
    tok = processor.tokenizer
    limit = max(1, min(max_tokens, int(getattr(tok, "model_max_length", None) or 2 * max_tokens) // 2))
    head = caption[: limit * 32]  # never tokenize megabytes: 32 characters per token is ample
    ids = tok(head, add_special_tokens=False, truncation=True, max_length=limit + 1)["input_ids"]
    if len(ids) <= limit and len(head) == len(caption):
        return caption
    return tok.decode(ids[:limit])


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
    Captions are cut to ``MAX_CAPTION_TOKENS`` (``bounded_caption``).
    """
    n = len(videos)
    if not (len(captions) == len(dimensions) == n) or (answers is not None and len(answers) != n):
        raise ValueError(
            f"encode_batch: {n} videos, {len(captions)} captions, {len(dimensions)} dimensions"
            + (f", {len(answers)} answers" if answers is not None else "")
        )
    if n == 0:
        raise ValueError("encode_batch: empty batch")
    family, proc = loaded.backbone, loaded.processor
    prompts = [family.prompt_text(proc, bounded_caption(proc, c), d) for c, d in zip(captions, dimensions)]
    return encode_prompts(loaded, videos, prompts, answers)


def encode_prompts(
    loaded: LoadedCritic,
    videos: Sequence[np.ndarray],
    prompts: Sequence[str],
    answers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``encode_batch`` for chat-templated prompts (``CriticBackbone.chat_prompt``): left-padded
    scoring inputs, or right-padded training inputs with ``labels`` on the answers."""
    family, proc = loaded.backbone, loaded.processor
    training = answers is not None
    texts = [p + a + family.end_of_turn for p, a in zip(prompts, answers)] if training else prompts
    inputs = family.encode(proc, _checked_videos(videos), texts,
                           padding_side="right" if training else "left", frame_size=loaded.frame_size)
    if training:
        inputs["labels"] = answer_labels(inputs["input_ids"], inputs["attention_mask"],
                                         [family.answer_token_ids(proc, a) for a in answers])
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
# Base weights up to this size stream their bytes into the id, as every earlier version did (the ids
# of existing critics stay what they were); larger ones hash each file's sha256, which the stat cache
# (``lift_core.hash_cache``) keeps, so a multi-gigabyte base is read once, not on every run.
_HASH_LIMIT = 512 << 20


def _hash_files(h: "hashlib._Hash", root: str, names: Sequence[str], by_content: bool) -> None:
    from lift_core.hash_cache import file_sha256

    fs, path = storage.fs_and_path(root)
    for name in names:
        p = f"{path.rstrip('/')}/{name}"
        h.update(name.encode())
        if by_content:
            with fs.open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(file_sha256(fs, p, verify=storage.verify_requested()).encode())


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
        weights = check_adapter(adapter_dir)  # a damaged adapter is refused here, before any loading
        adapter_cfg = storage.read_json(storage.join(adapter_dir, "adapter_config.json"))
        adapter_cfg.pop("base_model_name_or_path", None)  # a path, different on every machine
        adapter_cfg.pop("revision", None)
        h.update(json.dumps(adapter_cfg, sort_keys=True).encode())
        _hash_files(h, adapter_dir, weights, by_content=True)
    else:
        h.update(b"no-adapter")
    return h.hexdigest()[:16]
