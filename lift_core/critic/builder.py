"""A tiny critic of a registered backbone's architecture, built locally and saved as a normal model directory.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here (``tokenizers``) on a corpus
of LiFT's questions, the answer format and the synthetic caption grammar, so ``Good``, ``Normal``
and ``Bad`` are single tokens. The backbone named by ``critic.build_tiny.architecture`` makes the
random model, its processor and chat template from the small config (``CriticBackbone.build_tiny``;
Qwen2-VL and Qwen2.5-VL can). Everything is written with ``save_pretrained``, so ``load_critic``
loads the directory exactly as it loads ``Qwen/Qwen2-VL-2B-Instruct``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from typing import Iterator, Sequence

from lift_core import storage
from lift_core.config import DIMENSIONS, LABELS, PipelineConfig, TinyCriticConfig

log = logging.getLogger("lift.critic")

BUILD_RECORD = "lift_tiny_critic.json"  # what the builder wrote: its config and parameter count

# Generic words of video descriptions and critiques, so captions beyond the synthetic grammar
# still get sensible pieces (anything else falls back to bytes).
_GENERIC = (
    "a an the this that these those is are was were be has have with without and or but not no of in on at to "
    "from by for as it its they their there here video frame frames scene shows show showing features person "
    "people man woman child dog cat car animal object objects background camera moving moves motion smooth "
    "smoothly steady steadily fast slow quickly slowly across left right up down top bottom centre center "
    "plain dark light bright white black grey gray orange purple pink brown colour color shape shapes size "
    "small large big number count quantity text caption matches match does says said but however problem "
    "problems issue issues obvious visible clear clearly blurry blurred blur noise noisy heavy light blocky "
    "corruption artifacts artifact distorted deformed unrealistic realistic natural physics continuous "
    "jitter jitters jittery shaking jump jumps random places between teleporting sudden abrupt"
)


def _synthetic_corpus() -> Iterator[str]:
    """Captions and reasons of the synthetic demo grammar (lift_core.video.synth)."""
    from lift_core.video import synth

    for count in synth.COUNTS:
        for colour in synth.COLOURS:
            for shape in synth.SHAPES:
                for direction in synth.DIRECTIONS:
                    yield synth.caption_text(count, colour, shape, direction)
                shown = f"{count} {colour} {synth.plural(shape, count)}"
                yield f"The caption says {shown} but the video shows {shown}."
    for motion in ("smooth", "jittery", "teleporting"):
        for fidelity in ("clean", "blur", "light-noise", "blocky", "heavy-noise"):
            spec = synth.SynthSpec("red", "circle", "one", "left", motion, fidelity, "red", "circle", "one")
            yield from spec.reasons().values()


def tokenizer_corpus() -> Iterator[str]:
    """Lines the tokenizer is trained on: questions, answers, caption grammar, generic words."""
    from lift_core.critic.prompts import QUESTIONS

    synthetic = list(_synthetic_corpus())
    for _ in range(4):  # repeated so label words and questions win merges over rarer strings
        for dim in DIMENSIONS:
            yield QUESTIONS[dim]
        for label in LABELS:
            yield f"{label}. The video is {label.lower()}."
            yield label
            yield f"{label}."
        yield from synthetic
    yield _GENERIC


def train_tokenizer(vocab_size: int, special_tokens: Sequence[str], *, eos_token: str, pad_token: str,
                    chat_template: str):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with a backbone's special tokens and chat template,
    trained on ``tokenizer_corpus``; the labels come out as single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos_token,
        pad_token=pad_token,
        unk_token=None,
        additional_special_tokens=[t for t in special_tokens if t != pad_token],
        model_max_length=4096,
        padding_side="left",
    )
    fast.chat_template = chat_template
    for label in LABELS:
        ids = fast(label, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise RuntimeError(f"tokenizer: label {label!r} is {len(ids)} tokens, not 1 (vocab_size={vocab_size})")
    return fast


def build_tiny_critic(out_dir: str, cfg: TinyCriticConfig) -> str:
    """Build the tiny critic into the local directory ``out_dir`` (written atomically); returns it."""
    import torch

    from lift_core.critic.backbone import get_backbone

    if storage.local_path(out_dir) is None:
        raise ValueError(f"critic.model must be a local directory to build a tiny critic into, got {out_dir}")
    out_dir = os.path.abspath(out_dir)
    # Seeded here, so a backbone's build_tiny need not: the random weights follow build_tiny.seed.
    torch.manual_seed(cfg.seed)
    model, processor = get_backbone(cfg.architecture).build_tiny(cfg)
    tmp = f"{out_dir}.tmp-{uuid.uuid4().hex[:8]}"
    record = {"built_by": "lift_core.critic.builder", "config": cfg.model_dump(mode="json"),
              "parameters": sum(p.numel() for p in model.parameters())}
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        with open(os.path.join(tmp, BUILD_RECORD), "w") as f:
            json.dump(record, f, indent=2)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.makedirs(os.path.dirname(out_dir) or ".", exist_ok=True)
        os.rename(tmp, out_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("built tiny critic (%d parameters) in %s", record["parameters"], out_dir)
    return out_dir


def built_config(model_dir: str) -> dict | None:
    """The ``TinyCriticConfig`` (as JSON) a tiny critic dir was built from; None when it is not one."""
    try:
        with open(os.path.join(model_dir, BUILD_RECORD)) as f:
            return json.load(f).get("config")
    except (OSError, ValueError):
        return None


def ensure_critic_base(cfg: PipelineConfig) -> str:
    """The critic base model to load: builds the tiny one into ``critic.model`` when ``critic.build_tiny``
    is set and the directory has no model yet, or one built from other ``build_tiny`` values;
    otherwise returns ``critic.model`` as is."""
    c = cfg.critic
    if c.build_tiny is None:
        return c.model
    local = storage.local_path(c.model)
    if local is None:
        raise ValueError(f"critic.build_tiny needs a local critic.model directory, got {c.model}")
    local = os.path.abspath(local)
    if not os.path.exists(os.path.join(local, "config.json")):
        build_tiny_critic(local, c.build_tiny)
    elif built_config(local) not in (None, c.build_tiny.model_dump(mode="json")):
        # Built earlier from other build_tiny values: rebuild, or the new values would be ignored.
        log.info("critic.build_tiny changed since %s was built: rebuilding it", local)
        build_tiny_critic(local, c.build_tiny)
    return local
