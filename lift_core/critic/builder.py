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


def build_tiny_critic(out_dir: str, cfg: TinyCriticConfig, build: dict | None = None) -> str:
    """Build the tiny critic into the local directory ``out_dir`` (written atomically); returns it.
    ``build`` (``build_record``) goes into its record."""
    import torch

    from lift_core.critic.backbone import get_backbone

    if storage.local_path(out_dir) is None:
        raise ValueError(f"critic.model must be a local directory to build a tiny critic into, got {out_dir}")
    out_dir = os.path.abspath(out_dir)
    # Seeded here, so a backbone's build_tiny need not: the random weights follow build_tiny.seed.
    torch.manual_seed(cfg.seed)
    model, processor = get_backbone(cfg.architecture).build_tiny(cfg)
    record = {"built_by": "lift_core.critic.builder", "config": cfg.model_dump(mode="json"),
              "build": build or {"build_tiny": cfg.model_dump(mode="json")},
              "parameters": sum(p.numel() for p in model.parameters())}

    def write(tmp: str) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        with open(os.path.join(tmp, BUILD_RECORD), "w") as f:
            json.dump(record, f, indent=2)

    _publish(write, out_dir)
    log.info("built tiny critic (%d parameters) in %s", record["parameters"], out_dir)
    return out_dir


def _publish(write, out_dir: str) -> None:
    """``write(tmp)`` a model folder, then move it into ``out_dir`` (replacing what was there)."""
    tmp = f"{out_dir}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        os.makedirs(tmp)
        write(tmp)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.makedirs(os.path.dirname(out_dir) or ".", exist_ok=True)
        os.rename(tmp, out_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def build_record(cfg: PipelineConfig) -> dict:
    """What decides a tiny critic build: the backbone, ``critic.build_tiny`` and, when pre-trained,
    ``critic.pretrain`` and the clip and input shapes its data has."""
    c = cfg.critic
    record: dict = {"backbone": c.backbone, "build_tiny": c.build_tiny.model_dump(mode="json")}
    if c.pretrain is not None:
        s = cfg.data.synthetic
        from lift_core.train.loop import decisive_training_values

        record["pretrain"] = decisive_training_values(c.pretrain.model_dump(mode="json"))
        record["shape"] = {
            "clip": None if s is None else {k: getattr(s, k) for k in ("height", "width", "num_frames", "fps")},
            "input": {"frames": cfg.decode.frames, "height": cfg.decode.height, "width": cfg.decode.width},
        }
    return record


def recipe_fingerprint() -> str:
    """The source of what a tiny critic build runs: builder, tokenizer, backbone config, pre-training
    recipe, and the world's renderer and video codec that make its data."""
    from lift_core import shipped
    from lift_core.critic import pretrain as p
    from lift_core.critic.backbones.qwen2_vl import Qwen2VL
    from lift_core.video import io, synth

    return shipped.recipe_fingerprint([
        build_tiny_critic, train_tokenizer, tokenizer_corpus, _synthetic_corpus, Qwen2VL.tiny_config,
        Qwen2VL.tiny_vision_config, Qwen2VL.build_tiny, p._seed, p.describe, p.sample_clip_spec,
        p._other_description, p.clip_frames, p.make_examples, p.answer_token_loss, p.VlmPretrainRecipe,
        synth.render, synth._shape_mask, synth._degrade, synth._box_blur, io.encode_mp4,
    ], values={"tasks": p.TASKS, "prompts": p.PROMPTS, "appearance": p.APPEARANCE, "movement": p.MOVEMENT})


def build_pretrained_tiny_critic(out_dir: str, cfg: PipelineConfig, progress=None) -> dict:
    """Build the tiny critic, pre-train it (``lift_core.critic.pretrain``) and publish it at ``out_dir``;
    returns its record."""
    import tempfile

    from lift_core.critic.pretrain import pretrain_tiny_critic

    build = build_record(cfg)
    with tempfile.TemporaryDirectory(prefix="lift-tiny-critic-") as tmp:
        staging = build_tiny_critic(os.path.join(tmp, "model"), cfg.critic.build_tiny, build)
        figures = pretrain_tiny_critic(cfg, staging, build, progress)
        with open(os.path.join(staging, BUILD_RECORD)) as f:
            record = {**json.load(f), "pretrain_figures": figures}
        with open(os.path.join(staging, BUILD_RECORD), "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
        _publish(lambda d: shutil.copytree(staging, d, dirs_exist_ok=True), os.path.abspath(out_dir))
    return record


def built_record(model_dir: str) -> dict | None:
    """The record of a tiny critic build in ``model_dir``; None when it is not one."""
    try:
        with open(os.path.join(model_dir, BUILD_RECORD)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def built_config(model_dir: str) -> dict | None:
    """The ``TinyCriticConfig`` (as JSON) a tiny critic dir was built from; None when it is not one."""
    record = built_record(model_dir)
    return None if record is None else record.get("config")


def _built_build(model_dir: str, backbone: str) -> dict | None:
    record = built_record(model_dir)
    if record is None:
        return None
    return record.get("build") or {"backbone": backbone, "build_tiny": record.get("config")}


def ensure_critic_base(cfg: PipelineConfig) -> str:
    """The critic base model to load.

    - ``critic.model`` a catalog entry (``catalog:<name>``): the shipped model, checked against its
      sha256, when ``critic.build_tiny``/``pretrain`` (if set) are what it was built from; else a build
      of those settings in ``critic.build_dir``.
    - ``critic.build_tiny`` set: builds (and with ``pretrain``, pre-trains) the tiny one into
      ``critic.model`` when the directory has no model yet, or one built from other settings.
    - otherwise ``critic.model`` as is (a hub id or a directory)."""
    from lift_core import shipped

    c = cfg.critic
    target = c.model
    if shipped.is_catalog_ref(c.model):
        wanted = build_record(cfg) if c.build_tiny is not None else None
        found = shipped.resolve(c.model, cfg.data.catalog, "critic", wanted, recipe_fingerprint())
        if found is not None:
            return found
        target = c.build_dir
    if c.build_tiny is None:
        return target
    local = storage.local_path(target)
    if local is None:
        raise ValueError(f"critic.build_tiny needs a local critic.model directory, got {target}")
    local = os.path.abspath(local)
    wanted = build_record(cfg)
    exists = os.path.exists(os.path.join(local, "config.json"))
    if exists and _built_build(local, c.backbone) not in (None, wanted):
        # Built earlier from other settings: rebuild, or the new values would be ignored.
        log.info("critic.build_tiny or critic.pretrain changed since %s was built: rebuilding it", local)
        exists = False
    if not exists:
        if c.pretrain is not None:
            build_pretrained_tiny_critic(local, cfg)
        else:
            build_tiny_critic(local, c.build_tiny, wanted)
    return local
