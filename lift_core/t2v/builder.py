"""The T2V base model: a tiny CogVideoX-architecture pipeline built locally, or a real one by config.

``build_tiny_t2v`` makes every component from a config (transformer, VAE, T5 encoder, a T5 tokenizer
from a locally trained sentencepiece model, ``CogVideoXDDIMScheduler`` with CogVideoX-2b's settings)
and saves a normal diffusers directory, which then loads through the same
``CogVideoXPipeline.from_pretrained`` path as ``THUDM/CogVideoX-2b``.

``T5Tokenizer(vocab_file=...)`` silently ignores the file (docs/PROBES.md); the tokenizer is loaded
from a directory holding ``spiece.model`` instead, and a check fails loudly if the vocabulary is not
the trained one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from lift_core import storage
from lift_core.config import PipelineConfig, SplitConfig, T2VConfig, TinyT2VConfig

log = logging.getLogger("lift.t2v")

BUILD_RECORD = "lift_tiny_t2v.json"  # the build_tiny values and video shape a tiny model was built from

# CogVideoX-2b's scheduler_config.json: v-prediction, zero-terminal-SNR betas, trailing timesteps.
COGVIDEOX_2B_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "snr_shift_scale": 3.0,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
}

# Words of everyday video prompts (VBench-style), so the tokenizer has real pieces beyond the
# synthetic grammar; byte fallback covers anything else.
_GENERAL_WORDS = """
a an the of in on at with and or to from by over under near behind across through into onto
person man woman child dog cat horse bird fish car bus train boat plane bicycle tree flower
house city street road river lake sea ocean beach mountain forest field sky cloud sun moon rain
snow fire water light shadow night day morning evening sunset sunrise
walking running jumping flying swimming dancing playing eating drinking sitting standing riding
driving moving turning rotating falling rising spinning waving smiling talking looking
left right up down slowly quickly smoothly steadily gently camera pan zoom tilt close view wide
red green blue yellow orange purple pink white black brown gray grey dark bright plain colorful
one two three four five many small large big tiny huge round square circle triangle shape object
background foreground scene video frame realistic beautiful high quality detailed cinematic
, . ! ? ' " - : ; ( )
"""


def tokenizer_corpus() -> list[str]:
    """Sentences to train the tiny tokenizer: every caption of the synthetic grammar plus general words."""
    from lift_core.video.synth import COLOURS, COUNTS, DIRECTIONS, SHAPES, caption_text

    sentences = [
        caption_text(count, colour, shape, direction)
        for count in COUNTS
        for colour in COLOURS
        for shape in SHAPES
        for direction in DIRECTIONS
    ]
    words = _GENERAL_WORDS.split()
    sentences += [" ".join(words[i : i + 8]) for i in range(0, len(words), 4)]
    return sentences


def train_sentencepiece(out_dir: str, vocab_size: int, corpus: list[str] | None = None) -> str:
    """Train a unigram sentencepiece model with T5's special ids (pad 0, eos 1, unk 2) into ``out_dir/spiece.model``."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus or tokenizer_corpus()),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        byte_fallback=True,  # any text encodes, never as <unk>
        hard_vocab_limit=False,
        character_coverage=1.0,
        num_threads=1,  # deterministic
        minloglevel=2,
    )
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "spiece.model")
    Path(path).write_bytes(buf.getvalue())
    return path


def load_t5_tokenizer(spiece_dir: str):
    """A ``T5Tokenizer`` from a directory holding ``spiece.model`` (never ``vocab_file=``, see module doc)."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    tok = T5Tokenizer.from_pretrained(spiece_dir, extra_ids=0)
    expected = spm.SentencePieceProcessor(model_file=os.path.join(spiece_dir, "spiece.model")).get_piece_size()
    if len(tok) < expected:
        raise RuntimeError(f"T5 tokenizer has {len(tok)} tokens, the sentencepiece model {expected}: it was not loaded")
    return tok


def build_tiny_t2v(out_dir: str, tiny: TinyT2VConfig, t2v: T2VConfig) -> str:
    """Build a tiny CogVideoX-architecture pipeline into ``out_dir`` (a local directory); returns it."""
    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from lift_core.t2v.spec import get_spec

    if t2v.family != "cogvideox":
        raise ValueError(f"build_tiny builds CogVideoX only, got t2v.family={t2v.family!r}")
    get_spec(t2v.family).check_shape(t2v.height, t2v.width, t2v.num_frames)
    blocks = list(tiny.vae_block_out_channels)
    spatial = 2 ** (len(blocks) - 1)
    if len(blocks) < 3:  # the first log2(4) = 2 downsampling blocks also halve time
        raise ValueError(f"t2v.build_tiny.vae_block_out_channels needs at least 3 blocks for CogVideoX's 4x "
                         f"temporal compression, got {blocks}")
    if t2v.height % (spatial * 2) or t2v.width % (spatial * 2):
        raise ValueError(f"t2v {t2v.height}x{t2v.width} must be a multiple of {spatial * 2} (VAE x patch size)")
    inner = tiny.num_attention_heads * tiny.attention_head_dim

    with tempfile.TemporaryDirectory(prefix="lift-tiny-t2v-") as tmp:
        tok = load_t5_tokenizer(os.path.dirname(train_sentencepiece(os.path.join(tmp, "spm"), tiny.vocab_size)))
        torch.manual_seed(tiny.seed)
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=tiny.num_attention_heads,
            attention_head_dim=tiny.attention_head_dim,
            in_channels=tiny.latent_channels,
            out_channels=tiny.latent_channels,
            time_embed_dim=tiny.time_embed_dim,
            text_embed_dim=inner,  # the T5 d_model below
            num_layers=tiny.num_layers,
            sample_width=t2v.width // spatial,
            sample_height=t2v.height // spatial,
            sample_frames=t2v.num_frames,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=t2v.max_sequence_length,
        )
        torch.manual_seed(tiny.seed + 1)
        vae = AutoencoderKLCogVideoX(
            in_channels=3,
            out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",) * len(blocks),
            up_block_types=("CogVideoXUpBlock3D",) * len(blocks),
            block_out_channels=tuple(blocks),
            latent_channels=tiny.latent_channels,
            layers_per_block=1,
            norm_num_groups=tiny.vae_norm_groups,
            temporal_compression_ratio=4,
        )
        torch.manual_seed(tiny.seed + 2)
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tok),
                d_model=inner,
                d_kv=tiny.attention_head_dim,
                d_ff=2 * inner,
                num_layers=tiny.t5_layers,
                num_heads=tiny.num_attention_heads,
                relative_attention_num_buckets=8,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                decoder_start_token_id=tok.pad_token_id,
            )
        )
        scheduler = CogVideoXDDIMScheduler(**COGVIDEOX_2B_SCHEDULER)
        pipe = CogVideoXPipeline(
            tokenizer=tok, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
        )
        staging = os.path.join(tmp, "pipe")
        pipe.save_pretrained(staging)
        # The trained sentencepiece model travels with the tokenizer (real T5 dirs hold one too).
        shutil.copy(os.path.join(tmp, "spm", "spiece.model"), os.path.join(staging, "tokenizer", "spiece.model"))
        with open(os.path.join(staging, BUILD_RECORD), "w") as f:
            json.dump(build_record(tiny, t2v), f, indent=2, sort_keys=True)
        _publish_dir(staging, out_dir)
    return out_dir


def build_record(tiny: TinyT2VConfig, t2v: T2VConfig, split: SplitConfig | None = None) -> dict:
    """What decides a tiny build: ``t2v.build_tiny``, the video and text shapes it was sized for and,
    when pre-trained, ``t2v.pretrain`` and the held-out split its data leaves out."""
    shape = {k: getattr(t2v, k) for k in ("height", "width", "num_frames", "max_sequence_length")}
    record = {"build_tiny": tiny.model_dump(mode="json"), "shape": shape}
    if t2v.pretrain is not None:
        from lift_core.train.loop import decisive_training_values

        record["pretrain"] = decisive_training_values(t2v.pretrain.model_dump(mode="json"))
        record["heldout_split"] = (split or SplitConfig()).model_dump(mode="json")
    return record


def _decisive(record: dict | None) -> dict | None:
    """A record without what a build reports about itself (its figures)."""
    return None if record is None else {k: v for k, v in record.items() if k != "pretrain_figures"}


def build_pretrained_tiny_t2v(out_dir: str, cfg: PipelineConfig, progress=None) -> str:
    """Build the tiny model, pre-train it (``lift_core.t2v.pretrain``) and publish it at ``out_dir``."""
    from lift_core.t2v.pretrain import pretrain_tiny_t2v

    record = build_record(cfg.t2v.build_tiny, cfg.t2v, cfg.data.split)
    with tempfile.TemporaryDirectory(prefix="lift-tiny-t2v-") as tmp:
        staging = os.path.join(tmp, "model")
        build_tiny_t2v(staging, cfg.t2v.build_tiny, cfg.t2v)
        figures = pretrain_tiny_t2v(cfg, staging, record, progress)
        with open(os.path.join(staging, BUILD_RECORD), "w") as f:
            json.dump({**record, "pretrain_figures": figures}, f, indent=2, sort_keys=True)
        _publish_dir(staging, out_dir)
    return out_dir


def built_record(model_dir: str) -> dict | None:
    """The record of a tiny build in ``model_dir``; None for models not built here (or built before records)."""
    path = os.path.join(model_dir, BUILD_RECORD)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _publish_dir(src: str, dest: str) -> None:
    """Move a finished build into place; a concurrent build that won the race is kept."""
    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    tmp_dest = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
    shutil.copytree(src, tmp_dest)
    try:
        os.rename(tmp_dest, dest)
    except OSError:
        shutil.rmtree(tmp_dest, ignore_errors=True)
        if not os.path.exists(os.path.join(dest, "model_index.json")):
            raise


def is_hub_id(model: str) -> bool:
    """``org/name`` with no scheme and no local directory of that name."""
    return "://" not in model and not os.path.isabs(model) and model.count("/") == 1 and not os.path.exists(model)


def recipe_fingerprint() -> str:
    """The source of what a tiny T2V build runs: the builder, tokenizer, scheduler settings, the
    pre-training recipes, and the world's renderer that makes its data."""
    from lift_core import shipped
    from lift_core.t2v import pretrain as p
    from lift_core.video import synth

    return shipped.recipe_fingerprint([
        build_tiny_t2v, train_sentencepiece, tokenizer_corpus, load_t5_tokenizer, p.clip_seed, p.noisy_caption,
        p.render_clips, p.VaeRecipe, p.DenoiserRecipe, p.latent_scaling_factor, synth.render, synth._shape_mask,
        synth.training_combinations, synth.caption_split,
    ], values={"scheduler": COGVIDEOX_2B_SCHEDULER, "noise_tries": p.NOISE_TRIES})


def ensure_t2v_base(cfg: PipelineConfig) -> str:
    """The T2V base model to load; returns a local directory (remote ones are copied to a local cache)
    or a hub id.

    - ``t2v.model`` a catalog entry (``catalog:<name>``): the shipped model, checked against its
      sha256, when ``t2v.build_tiny``/``pretrain`` (if set) are what it was built from; else a build of
      those settings in ``t2v.build_dir``.
    - ``build_tiny`` set: builds (and with ``pretrain``, pre-trains) the tiny model into ``t2v.model``
      when it is missing or was built from other settings."""
    from lift_core import shipped

    model = cfg.t2v.model
    wanted = build_record(cfg.t2v.build_tiny, cfg.t2v, cfg.data.split) if cfg.t2v.build_tiny is not None else None
    if shipped.is_catalog_ref(model):
        found = shipped.resolve(model, cfg.data.catalog, "t2v", wanted, recipe_fingerprint())
        if found is not None:
            return found
        model = cfg.t2v.build_dir
    if is_hub_id(model):
        if cfg.t2v.build_tiny is not None:
            raise ValueError(f"t2v.build_tiny is set but t2v.model={model!r} is a hub id; give a directory")
        return model
    index = storage.join(model, "model_index.json")
    local = storage.local_path(model)
    if (wanted is not None and local is not None and storage.exists(index)
            and _decisive(built_record(local)) not in (None, wanted)):
        # Built earlier from other build_tiny or pre-training values or shapes: rebuild, or the new
        # values would be ignored.
        log.info("t2v.build_tiny, t2v.pretrain or the video shape changed since %s was built: rebuilding it", local)
        shutil.rmtree(local)
    if not storage.exists(index):
        if cfg.t2v.build_tiny is None:
            raise FileNotFoundError(f"no diffusers pipeline at t2v.model={model} (model_index.json missing)")
        build = ((lambda d: build_pretrained_tiny_t2v(d, cfg)) if cfg.t2v.pretrain is not None
                 else (lambda d: build_tiny_t2v(d, cfg.t2v.build_tiny, cfg.t2v)))
        if local is not None:
            log.info("building the tiny T2V model into %s", local)
            build(local)
        else:
            with tempfile.TemporaryDirectory(prefix="lift-tiny-t2v-") as tmp:
                built = build(os.path.join(tmp, "model"))
                fs, path = storage.fs_and_path(model)
                fs.put(built.rstrip("/") + "/", path.rstrip("/"), recursive=True)
    local = storage.local_path(model)
    return os.path.abspath(local) if local is not None else storage.local_dir(model, "model_index.json")


__all__ = [
    "BUILD_RECORD",
    "COGVIDEOX_2B_SCHEDULER",
    "build_pretrained_tiny_t2v",
    "build_record",
    "built_record",
    "build_tiny_t2v",
    "ensure_t2v_base",
    "is_hub_id",
    "recipe_fingerprint",
    "load_t5_tokenizer",
    "tokenizer_corpus",
    "train_sentencepiece",
]
