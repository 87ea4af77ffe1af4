"""Benchmark: LiFT's paper-scale workloads on one GPU, on full-size random-weight CogVideoX-2b and Qwen2-VL-2B.

Every model is built from the published configurations vendored in ``lift_core/model_configs`` (no
download, random weights: the timings and memory of a forward or a step do not depend on the values),
and every measurement goes through the library code the stages run, with the settings of the shipped
paper-scale profiles (``configs/lift-cogvideox-2b-1gpu.yaml``, and ``configs/lift-cogvideox-2b.yaml`` for
LiFT's full fine-tune):

- **critic scoring**: videos/s of ``CriticScorer`` (Qwen2-VL-2B-Instruct + a LoRA r128/a256 adapter on
  every LLM linear, loaded through ``from_pretrained`` as scoring loads them) on 8 frames of
  ``decode.height x decode.width``, ``score.batch_size`` videos (x 3 questions) per forward; label
  probabilities only (``score.rationale: false``), and once with 32-token rationales;
- **VAE encode**: seconds per 49x480x720 clip, ``CogVideoXSpec.encode_video_dist`` with
  ``reduce_vae_memory(pipe, tiling, slicing)`` on (what the latent cache actors run);
- **alignment step**: one optimizer step of LiFT's loss (``lift_core.t2v.loss``: ``make_batch`` from a
  cached latent distribution and text embedding, ``per_sample_loss``) on 49x480x720 latents, batch 1,
  gradient checkpointing on, bf16 autocast, trainable weights in fp32, AdamW with the profile's settings
  and gradient clipping, as ``lift_core.train.loop`` runs it; for the LoRA r128 of the 1-GPU profile
  and for LiFT's full fine-tune of ``transformer_blocks`` (``add_trainable``). Step time and peak memory
  (``torch.cuda.max_memory_allocated`` from the model's build on: weights, optimizer state, activations);
- **generation**: seconds per 49x480x720 video at 50 steps, guidance 6 (``CogVideoXSpec.generate``,
  VAE tiling and slicing on, T5-XXL text encoder at 226 tokens).

Each timing is 1 warm-up and then up to 3 timed runs (generation: a 2-step warm-up and up to 2 timed
videos); a timed loop stops early when its next run would pass ``--budget-s``, so that one run on one
H200 ends within 8 minutes (model builds included). ``--tiny`` runs every measurement on CPU with the
same architectures at 1 transformer / T5 / LLM layer, 1 vision block and narrow widths (``TINY_OVERRIDES``),
9x48x48 videos and 2 denoising steps: a smoke test of the code paths (its figures are not measurements),
written outside ``benchmarks/results``.

    python benchmarks/gpu_real_scale.py                       # on a GPU machine: within 8 min on one H200
    python benchmarks/gpu_real_scale.py --tiny --out-dir /tmp/b   # CPU smoke mode, well under a minute

Writes ``<out-dir>/gpu_real_scale.json`` and ``gpu_real_scale.md``; ``ratio`` = our LoRA r128 peak memory
over finetrainers' published CogVideoX-2b LoRA r64 peak (21.564 GiB), null without a GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import command, machine, publish  # noqa: E402  (benchmarks/ is on sys.path)

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
NAME = "gpu_real_scale"
RESULTS = REPO / "benchmarks" / "results"
PROFILE_1GPU = REPO / "configs" / "lift-cogvideox-2b-1gpu.yaml"  # LoRA r128, Qwen2-VL-2B critic
PROFILE_PAPER = REPO / "configs" / "lift-cogvideox-2b.yaml"  # LiFT's full fine-tune of transformer_blocks

# The figures to compare with, as found publicly.
FINETRAINERS_LORA64_PEAK_GIB = 21.564
FINETRAINERS_SOURCE = (
    "finetrainers (formerly cogvideox-factory), legacy training/README.md, \"Memory requirements\" -> LoRA "
    "finetuning -> AdamW, train_batch_size = 1: THUDM/CogVideoX-2b, lora rank 64, gradient_checkpointing True, "
    "memory_after_validation 21.564 (rank 16: 21.121, rank 256: 22.344); latents and embeddings precomputed "
    "(training/prepare_dataset.py), no VAE or T5 during training; GB there = bytes / 1024**3 "
    "(training/utils.py print_memory), i.e. GiB. https://github.com/a-r-r-o-w/finetrainers/blob/main/training/README.md"
)
COGVIDEO_579_S_PER_CLIP = (1.5, 3.7)
COGVIDEO_579_SOURCE = (
    "CogVideo issue #579 (\"The VAE encoder is very slow\", https://github.com/zai-org/CogVideo/issues/579): "
    "CogVideoX-2B VAE on an A800, batch 8 x 49 x 288 x 512 without slicing or tiling: 12.5 s (reporter); "
    "\"usually around 5-7 seconds\" (maintainer). Per clip 0.63-1.56 s at 288x512, scaled by the pixel ratio "
    "(480 x 720) / (288 x 512) = 2.34 to 49x480x720: about 1.5-3.7 s per clip (the VAE's cost is linear in pixels)."
)

# --tiny: 9 frames (4k+1) of 48x48 -> latents [16, 3, 6, 6] (an odd latent count decodes back to 9 frames); the VAE tiles 32 px squares overlapping by a
# quarter, so the tiled path really runs (as tests/lift_core/test_real_architecture.py does).
TINY_VAE_TILING = {"tile_sample_min_height": 32, "tile_sample_min_width": 32,
                   "tile_overlap_factor_height": 0.25, "tile_overlap_factor_width": 0.25}
# --tiny: the same architectures (classes, block structure, patch sizes, channels, vocabulary) at 1 layer and
# narrow widths, so that every measurement runs on two CPU cores in seconds. T5's width is the transformer's
# text width; Qwen's head dim 32 takes the mrope split of lift_core.critic.backbones.qwen2_vl.mrope_section(32).
TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "transformer": {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 16, "text_embed_dim": 32,
                    "time_embed_dim": 16},
    "text_encoder": {"num_layers": 1, "num_decoder_layers": 1, "d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64},
    "vae": {"block_out_channels": [16, 16, 16, 16], "norm_num_groups": 4, "layers_per_block": 1},
    "critic": {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
               "num_key_value_heads": 1, "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]}},
    "critic_vision": {"depth": 1, "embed_dim": 32, "num_heads": 2, "hidden_size": 64},
}
GIB = float(1 << 30)


@dataclass(frozen=True)
class Scale:
    """What one run builds and measures."""

    tiny: bool
    device: str
    dtype: str  # the models' weights (t2v.dtype); trainable weights are fp32 whatever this is
    # Changes to the published configs, per component (empty at full scale).
    overrides: dict[str, dict[str, Any]]
    num_frames: int  # VAE encode, alignment latents, generation
    height: int
    width: int
    critic_frames: int
    critic_height: int
    critic_width: int
    critic_batch: int  # videos per forward (x 3 questions)
    critic_videos: int  # videos per timed run
    rationale_tokens: int
    gen_steps: int
    gen_warmup_steps: int
    warmup: int
    reps: int
    gen_reps: int


def make_scale(tiny: bool, device: str, profile: Any) -> Scale:
    """Full: the 1-GPU profile's video, frames and batches. Tiny: the smoke test's."""
    t2v, decode, score = profile.t2v, profile.decode, profile.score
    if tiny:
        # float32 on CPU: its bf16 conv3d kernels are ~5x slower than fp32 ones (bf16 autocast still runs).
        return Scale(tiny=True, device=device, dtype="float32", overrides=TINY_OVERRIDES,
                     num_frames=9, height=48, width=48,
                     critic_frames=decode.frames, critic_height=56, critic_width=56, critic_batch=2, critic_videos=2,
                     rationale_tokens=2, gen_steps=2, gen_warmup_steps=1, warmup=1, reps=1, gen_reps=1)
    return Scale(tiny=False, device=device, dtype=t2v.dtype, overrides={},
                 num_frames=t2v.num_frames, height=t2v.height, width=t2v.width,
                 critic_frames=decode.frames, critic_height=decode.height, critic_width=decode.width,
                 critic_batch=score.batch_size, critic_videos=2 * score.batch_size,
                 rationale_tokens=32, gen_steps=t2v.num_inference_steps, gen_warmup_steps=2, warmup=1, reps=3, gen_reps=2)


# --------------------------------------------------------------------------- timing and memory
class Budget:
    """Seconds left of the run's budget; a timed loop never starts a run it expects to pass it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[int], Any], warmup: int, reps: int, budget: Budget, device: str) -> list[float]:
    """``fn(i)`` ``warmup`` times, then up to ``reps`` timed runs (at least one); stops early when the next
    run would pass the budget."""
    for i in range(warmup):
        fn(-1 - i)
        sync(device)
    runs: list[float] = []
    for i in range(reps):
        if runs and budget.left() < max(runs):
            break
        t = time.perf_counter()
        fn(i)
        sync(device)
        runs.append(time.perf_counter() - t)
    return runs


def free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def reset_peak(device: str) -> None:
    import torch

    free(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    """``torch.cuda.max_memory_allocated`` since the last ``reset_peak``, in GiB; None on CPU."""
    import torch

    return round(torch.cuda.max_memory_allocated() / GIB, 3) if device.startswith("cuda") else None


def allocated_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.memory_allocated() / GIB, 3) if device.startswith("cuda") else None


def r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def summary(runs: list[float]) -> dict[str, Any]:
    return {"runs_s": [r(x) for x in runs], "median_s": r(statistics.median(runs))}


# --------------------------------------------------------------------------- building models
def published(*parts: str) -> dict[str, Any]:
    import lift_core

    return json.loads((Path(lift_core.__file__).resolve().parent / "model_configs").joinpath(*parts).read_text())


def build_on(scale: Scale, factory: Callable[[], Any]) -> Any:
    """``factory()`` with its parameters allocated on the scale's device and in its dtype (bf16: the
    checkpoints' dtype) and not initialised (``random_weights_`` fills them)."""
    import torch
    from transformers.initialization import no_init_weights

    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, scale.dtype))
    try:
        with torch.device(scale.device), no_init_weights():
            return factory()
    finally:
        torch.set_default_dtype(default)


def random_weights_(module: Any, seed: int) -> Any:
    """Fill every parameter: a seeded Gaussian block of prime length (on the parameters' device), tiled and
    scaled by 1/sqrt(fan_in) for matrices and kernels; 1-d weights (norms) 1, biases 0."""
    import torch

    first = next(module.parameters())
    gen = torch.Generator(device=first.device).manual_seed(seed)
    block = torch.randn(1_000_003, generator=gen, device=first.device)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                flat, scale = p.view(-1), float(p[0].numel()) ** -0.5
                for start in range(0, flat.numel(), block.numel()):
                    stop = min(start + block.numel(), flat.numel())
                    flat[start:stop].copy_(block[: stop - start] * scale)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)
    return module


def n_params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def build_transformer(scale: Scale) -> Any:
    from diffusers import CogVideoXTransformer3DModel

    cfg = {**published("cogvideox-2b", "transformer", "config.json"), **scale.overrides.get("transformer", {})}
    return random_weights_(build_on(scale, lambda: CogVideoXTransformer3DModel.from_config(cfg)), seed=0)


def build_vae(scale: Scale) -> Any:
    from diffusers import AutoencoderKLCogVideoX

    cfg = {**published("cogvideox-2b", "vae", "config.json"), **scale.overrides.get("vae", {})}
    vae = build_on(scale, lambda: AutoencoderKLCogVideoX.from_config(cfg))
    return random_weights_(vae, seed=1).eval()


def build_t5(scale: Scale) -> Any:
    from transformers import T5Config, T5EncoderModel

    cfg = {k: v for k, v in published("cogvideox-2b", "text_encoder", "config.json").items() if k != "architectures"}
    cfg.update(scale.overrides.get("text_encoder", {}))
    return random_weights_(build_on(scale, lambda: T5EncoderModel(T5Config(**cfg))), seed=2).eval()


def t5_tokenizer(work: Path) -> Any:
    """A T5 tokenizer from a locally trained sentencepiece model (the vocabulary is not vendored)."""
    from lift_core.t2v.builder import load_t5_tokenizer, train_sentencepiece

    return load_t5_tokenizer(os.path.dirname(train_sentencepiece(str(work / "spm"), 500)))


def cogvideox_pipe(vae: Any, transformer: Any = None, text_encoder: Any = None, tokenizer: Any = None) -> Any:
    """A ``CogVideoXPipeline`` of these components and CogVideoX-2b's published scheduler."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline

    scheduler = CogVideoXDDIMScheduler.from_config(published("cogvideox-2b", "scheduler", "scheduler_config.json"))
    pipe = CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def qwen_tokenizer_json() -> str:
    """A byte-level BPE trained on LiFT's questions and answers, its vocabulary padded with unused entries
    so that the special tokens take Qwen2-VL's published ids (151643 ...); the BPE vocabulary itself is
    not vendored (as in tests/lift_core/test_real_architecture.py)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    from lift_core.critic.builder import tokenizer_corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainers.BpeTrainer(
        vocab_size=2000, min_frequency=1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    specials = sorted((int(k), v["content"])
                      for k, v in published("qwen2-vl-2b-instruct", "tokenizer_config.json")["added_tokens_decoder"].items())
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for i in range(len(vocab), specials[0][0]):
        vocab[f"<|lift_unused_{i}|>"] = i
    tok = Tokenizer.from_str(json.dumps(data))
    tok.add_special_tokens([AddedToken(content, special=True, normalized=False) for _, content in specials])
    if not all(tok.token_to_id(content) == i for i, content in specials):
        raise RuntimeError("the local Qwen tokenizer's special tokens are not at the published ids")
    return tok.to_str()


def build_critic(scale: Scale, lora: Any, work: Path) -> tuple[str, str, dict[str, Any]]:
    """Qwen2-VL-2B-Instruct of the published config (random weights, bf16) saved as a hub-style directory
    with the published processor files and a local tokenizer, plus an untrained LoRA adapter of the
    profile's shape: (model dir, adapter dir, sizes)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    import lift_core

    q = published("qwen2-vl-2b-instruct", "config.json")
    q = {**q, **scale.overrides.get("critic", {}),
         "vision_config": {**q["vision_config"], **scale.overrides.get("critic_vision", {})}}
    model = build_on(scale, lambda: Qwen2VLForConditionalGeneration(Qwen2VLConfig(**q)))
    if model.config.tie_word_embeddings:  # as published (one embedding matrix); no_init_weights skips the tying
        model.tie_weights()
    random_weights_(model, seed=3)
    sizes = {"params": n_params(model), "llm_layers": model.config.text_config.num_hidden_layers,
             "vision_blocks": model.config.vision_config.depth}
    base, adapter = work / "Qwen2-VL-2B-Instruct", work / "critic-adapter"
    model.save_pretrained(base)
    (base / "tokenizer.json").write_text(qwen_tokenizer_json())
    src = Path(lift_core.__file__).resolve().parent / "model_configs" / "qwen2-vl-2b-instruct"
    for name in ("preprocessor_config.json", "chat_template.json", "tokenizer_config.json"):
        shutil.copy(src / name, base / name)
    peft_model = get_peft_model(model, PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                      target_modules=list(lora.target_modules)))
    sizes["adapter_params"] = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    peft_model.save_pretrained(adapter)
    del model, peft_model
    free(scale.device)
    return str(base), str(adapter), sizes


# --------------------------------------------------------------------------- the measurements
def measure_critic(scale: Scale, profile: Any, budget: Budget, work: Path) -> dict[str, Any]:
    import numpy as np

    from lift_core.critic.scoring import CriticScorer
    from lift_core.video import synth

    t0 = time.perf_counter()
    base, adapter, sizes = build_critic(scale, profile.critic.lora, work)
    score_cfg = profile.score.model_copy(update={"batch_size": scale.critic_batch,
                                                 "max_new_tokens": scale.rationale_tokens})
    scorer = CriticScorer(adapter, model=base, critic=profile.critic, score=score_cfg,
                          frame_size=(scale.critic_height, scale.critic_width), device=scale.device, rationale=False)
    setup_s = time.perf_counter() - t0
    rng = np.random.RandomState(0)
    frames = [rng.randint(0, 256, (scale.critic_frames, scale.critic_height, scale.critic_width, 3), dtype=np.uint8)
              for _ in range(scale.critic_videos)]
    captions = [synth.sample_spec(rng).caption for _ in frames]
    probs_seen: list[Any] = []

    def label_only(_: int) -> None:
        probs, _reasons = scorer.score(frames, captions, rationale=False)
        probs_seen.append(probs)

    runs = timed(label_only, scale.warmup, scale.reps, budget, scale.device)
    batch = frames[: scale.critic_batch]
    rationale_runs = timed(lambda _: scorer.score(batch, captions[: len(batch)], rationale=True), 0, 1, budget,
                           scale.device)
    probs = probs_seen[-1]
    m = 28  # 14 px patches merged 2x2
    visual = (-(-scale.critic_frames // 2)) * (scale.critic_height // m) * (scale.critic_width // m)
    out = {
        "model": "Qwen2-VL-2B-Instruct (published config), random weights; untrained LoRA adapter "
                 f"r{profile.critic.lora.r}/a{profile.critic.lora.alpha} on {list(profile.critic.lora.target_modules)}",
        "dtype": str(next(scorer.loaded.model.parameters()).dtype).replace("torch.", ""),
        "attn_implementation": getattr(scorer.loaded.model.config, "_attn_implementation", None),
        **sizes,
        "frames": scale.critic_frames, "frame_size": [scale.critic_height, scale.critic_width],
        "visual_tokens_per_video": visual,
        "videos_per_forward": scale.critic_batch, "rows_per_forward": 3 * scale.critic_batch,
        "videos_per_run": len(frames),
        "label_only": {**summary(runs), "videos_per_s": r(len(frames) / statistics.median(runs), 3)},
        "with_rationale": {**summary(rationale_runs), "videos": len(batch), "new_tokens": scale.rationale_tokens,
                           "videos_per_s": r(len(batch) / statistics.median(rationale_runs), 3)},
        "probabilities_sum_to_1": bool(np.allclose(probs.sum(axis=-1), 1.0, atol=1e-4)),
        "setup_s": r(setup_s, 2),
    }
    return out  # the scorer goes with this frame (section() frees the memory)


def measure_vae(scale: Scale, profile: Any, budget: Budget) -> tuple[dict[str, Any], Any, Any]:
    """(figures, the pipeline holding the VAE, one encoded latent distribution ``[2C, F', H', W']``)."""
    import torch

    from lift_core.t2v.spec import get_spec

    t0 = time.perf_counter()
    spec = get_spec(profile.t2v.family)
    spec.check_shape(scale.height, scale.width, scale.num_frames)
    pipe = cogvideox_pipe(build_vae(scale))
    spec.reduce_vae_memory(pipe, profile.t2v.vae_tiling, profile.t2v.vae_slicing)
    vae = pipe.vae
    if scale.tiny:
        vae.enable_tiling(**TINY_VAE_TILING)
    tiles = []
    tiled_encode = vae.tiled_encode
    vae.tiled_encode = lambda x: tiles.append(tuple(x.shape)) or tiled_encode(x)
    setup_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand((1, 3, scale.num_frames, scale.height, scale.width), generator=gen) * 2 - 1  # frames_to_pixels' range
    dists: list[Any] = []
    reset_peak(scale.device)
    runs = timed(lambda _: dists.append(spec.encode_video_dist(pipe, pixels)), scale.warmup, scale.reps, budget,
                 scale.device)
    del vae.tiled_encode  # the instance wrapper: back to the class method
    dist = dists[-1][0]
    out = {
        "clip": f"{scale.num_frames}x{scale.height}x{scale.width}",
        "dtype": scale.dtype,
        "tiling": bool(vae.use_tiling), "slicing": bool(vae.use_slicing),
        "tile_sample_min": [vae.tile_sample_min_height, vae.tile_sample_min_width],
        "tiled_encode_ran": bool(tiles),
        "params": n_params(vae),
        **summary(runs), "s_per_clip": r(statistics.median(runs)),
        "latent_dist_shape": list(dist.shape),
        "peak_gib": peak_gib(scale.device),
        "public_a800_s_per_clip": list(COGVIDEO_579_S_PER_CLIP),
        "setup_s": r(setup_s, 2),
    }
    return out, pipe, dist


def measure_align(scale: Scale, profile: Any, mode: str, pipe: Any, dist: Any, budget: Budget) -> dict[str, Any]:
    """Step time and peak memory of one alignment step, as ``lift_core.train.loop.run_worker`` runs it."""
    import torch

    from lift_core.t2v.align import add_trainable
    from lift_core.t2v.loss import make_batch, per_sample_loss, reward_weighted_loss, sample_seed
    from lift_core.t2v.spec import get_spec, torch_dtype
    from lift_core.train.loop import enable_gradient_checkpointing
    from lift_core.train.schedules import make_optimizer

    a, t2v = profile.align, profile.t2v
    train = a.train
    spec = get_spec(t2v.family)
    pipe.vae.to("cpu")  # as in training: the pipeline stays on the CPU, only the denoiser moves to the device
    spec.set_denoiser(pipe, None)  # a previous measurement's model, should it have failed half-way
    reset_peak(scale.device)
    t0 = time.perf_counter()
    transformer = build_transformer(scale)
    spec.set_denoiser(pipe, transformer)
    params = add_trainable(spec, transformer, mode, a.lora, a.full_train_modules)
    if train.gradient_checkpointing:
        enable_gradient_checkpointing(transformer)
    for p in params:  # trainable weights in fp32 whatever the base model's dtype (the loop does this)
        if p.dtype != torch.float32:
            p.data = p.data.float()
    transformer.train()
    optimizer = make_optimizer([{"params": params}], train.lr, train.betas, train.weight_decay)
    setup_s = time.perf_counter() - t0
    model_gib = allocated_gib(scale.device)
    text = torch.randn((t2v.max_sequence_length, transformer.config.text_embed_dim),
                       generator=torch.Generator().manual_seed(1))  # a cached T5 embedding's shape
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train.mixed_precision)
    device_type = torch.device(scale.device).type
    losses: list[float] = []
    grad_norms: list[float] = []

    def step(i: int) -> None:
        batch = make_batch(spec, pipe, [dist], [text], [0.9], [sample_seed(train.seed, i + 10)],
                           device=scale.device, dtype=torch_dtype(scale.dtype))
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device_type, dtype=amp, enabled=amp is not None):
            loss = reward_weighted_loss(per_sample_loss(spec, pipe, transformer, batch), batch.rewards)
        loss.float().backward()
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, train.grad_clip)))
        optimizer.step()
        losses.append(float(loss.detach()))

    runs = timed(step, scale.warmup, scale.reps, budget, scale.device)
    trainable = sum(p.numel() for p in params)
    patch = int(transformer.config.patch_size)
    out = {
        "mode": mode,
        "trains": (f"LoRA r{a.lora.r}/a{a.lora.alpha} on {list(a.lora.target_modules)}" if mode == "lora"
                   else f"full: {list(a.full_train_modules) or 'every parameter'}"),
        "profile": (PROFILE_1GPU if mode == "lora" else PROFILE_PAPER).relative_to(REPO).as_posix(),
        "transformer_params": n_params(transformer), "trainable_params": trainable,
        "latents": [dist.shape[0] // 2, *dist.shape[1:]],  # [C, F, H, W]: the mean half of the distribution
        "tokens": int(dist.shape[1] * (dist.shape[2] // patch) * (dist.shape[3] // patch) + t2v.max_sequence_length),
        "batch": 1, "gradient_checkpointing": bool(train.gradient_checkpointing),
        "mixed_precision": train.mixed_precision,
        "trainable_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in params}),
        "frozen_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in transformer.parameters() if not p.requires_grad}),
        "optimizer": {"lr": train.lr, "betas": list(train.betas), "weight_decay": train.weight_decay,
                      "grad_clip": train.grad_clip},
        **summary(runs), "step_s": r(statistics.median(runs)),
        "weights_gib_before_first_step": model_gib,  # the optimizer state appears at the first step
        "peak_gib": peak_gib(scale.device),
        "losses_finite": all(math.isfinite(x) for x in losses),
        "grad_norm_last": r(grad_norms[-1], 5) if grad_norms else None,
        "setup_s": r(setup_s, 2),
    }
    spec.set_denoiser(pipe, None)  # the model and optimizer go with this frame (section() frees the memory)
    return out


def measure_generation(scale: Scale, profile: Any, pipe: Any, budget: Budget, work: Path) -> dict[str, Any]:
    import torch

    from lift_core.t2v.spec import get_spec

    t2v = profile.t2v
    spec = get_spec(t2v.family)
    spec.set_denoiser(pipe, None)
    reset_peak(scale.device)
    t0 = time.perf_counter()
    gen_pipe = cogvideox_pipe(pipe.vae.to(scale.device), build_transformer(scale), build_t5(scale), t5_tokenizer(work))
    spec.reduce_vae_memory(gen_pipe, t2v.vae_tiling, t2v.vae_slicing)
    setup_s = time.perf_counter() - t0
    caption = "a red panda climbing a tree in a bamboo forest, the camera slowly panning up, cinematic, high quality"
    shapes: list[tuple[int, ...]] = []

    def video(i: int) -> None:
        steps = scale.gen_warmup_steps if i < 0 else scale.gen_steps
        out = spec.generate(gen_pipe, [caption], [torch.Generator(device="cpu").manual_seed(max(i, 0))],
                            height=scale.height, width=scale.width, num_frames=scale.num_frames,
                            num_inference_steps=steps, guidance_scale=t2v.guidance_scale,
                            max_sequence_length=t2v.max_sequence_length)
        shapes.append(tuple(out.shape))

    runs = timed(video, 1, scale.gen_reps, budget, scale.device)
    out = {
        "video": f"{scale.num_frames}x{scale.height}x{scale.width}",
        "steps": scale.gen_steps, "warmup_steps": scale.gen_warmup_steps,
        "guidance_scale": t2v.guidance_scale, "max_sequence_length": t2v.max_sequence_length,
        "scheduler": type(gen_pipe.scheduler).__name__, "dtype": scale.dtype,
        "vae_tiling": bool(gen_pipe.vae.use_tiling), "vae_slicing": bool(gen_pipe.vae.use_slicing),
        "text_encoder_params": n_params(gen_pipe.text_encoder),
        "frames_shape": list(shapes[-1]),
        **summary(runs), "s_per_video": r(statistics.median(runs), 3),
        "s_per_step_upper_bound": r(statistics.median(runs) / scale.gen_steps, 4),
        "peak_gib": peak_gib(scale.device),
        "setup_s": r(setup_s, 2),
    }
    return out


# --------------------------------------------------------------------------- the run
def section(figures: dict[str, Any], name: str, scale: Scale, budget: Budget, fn: Callable[[], Any]) -> Any:
    """Run one measurement; a failure is recorded in its figures (one line) and the others still run."""
    t = time.perf_counter()
    value = None
    try:
        value = fn()
    except Exception as err:  # noqa: BLE001  (a GPU run is scarce: keep every figure that was measured)
        traceback.print_exc()
        figures[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]}
    free(scale.device)  # what the measurement built went with its frame
    if value is None:
        return None
    figures[name] = value[0] if isinstance(value, tuple) else value
    figures[name]["section_s"] = r(time.perf_counter() - t, 2)
    print(f"[{NAME}] {name} done at {budget.elapsed():.0f} s", file=sys.stderr, flush=True)
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true",
                    help="CPU smoke mode: 1 layer, narrow widths, 9x48x48 videos, 2 denoising steps (not measurements)")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="timed loops stop early rather than pass this many seconds since the start (model builds count)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    ap.add_argument("--work", default=None, help="scratch dir for the saved critic (default: a temp dir, removed)")
    ap.add_argument("--out-dir", "--out", dest="out_dir", default=None,
                    help=f"where the JSON and md go (default: {RESULTS.relative_to(REPO)}; --tiny: a temp dir)")
    args = ap.parse_args(argv)

    import torch

    from lift_core.config import load_config

    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit(f"{NAME}: no CUDA GPU is visible; this benchmark needs one (about 8 min on one H200). "
                         "On CPU, `--tiny` runs its smoke version.")
    if args.out_dir is None:
        out_dir = Path(tempfile.gettempdir()) / f"lift-{NAME}-tiny" if args.tiny else RESULTS
    else:
        out_dir = Path(args.out_dir)
    if args.tiny and out_dir.resolve() == RESULTS.resolve():
        raise SystemExit(f"{NAME}: --tiny figures are a smoke test; write them elsewhere than {RESULTS.relative_to(REPO)} (--out-dir)")
    torch.set_num_threads(max(1, args.threads))
    budget = Budget(args.budget_s)
    device = "cpu" if args.tiny else "cuda"
    profile, paper = load_config(PROFILE_1GPU), load_config(PROFILE_PAPER)
    scale = make_scale(args.tiny, device, profile)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix=f"lift-{NAME}-"))
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"scale": "tiny (CPU smoke test)" if scale.tiny else "full (published configs)",
                               "settings": asdict(scale), "budget_s": args.budget_s,
                               "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    try:
        vae = section(figures, "vae_encode", scale, budget, lambda: measure_vae(scale, profile, budget))
        if vae is not None:
            _, pipe, dist = vae
            section(figures, "align_lora", scale, budget, lambda: measure_align(scale, profile, "lora", pipe, dist, budget))
            section(figures, "align_full", scale, budget, lambda: measure_align(scale, paper, "full", pipe, dist, budget))
        section(figures, "critic_scoring", scale, budget, lambda: measure_critic(scale, profile, budget, work))
        if vae is not None:
            section(figures, "generation", scale, budget, lambda: measure_generation(scale, profile, pipe, budget, work))
        else:
            figures["generation"] = {"error": "not run: the VAE could not be built (see vae_encode)"}
        for name in ("align_lora", "align_full"):
            figures.setdefault(name, {"error": "not run: the VAE could not be built (see vae_encode)"})
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    figures["wall_s"] = r(budget.elapsed(), 1)
    figures["public"] = {
        "finetrainers_cogvideox2b_lora64_peak_gib": FINETRAINERS_LORA64_PEAK_GIB, "finetrainers_source": FINETRAINERS_SOURCE,
        "cogvideo_579_vae_s_per_clip_a800": list(COGVIDEO_579_S_PER_CLIP), "cogvideo_579_source": COGVIDEO_579_SOURCE,
    }
    lora_peak = figures["align_lora"].get("peak_gib")
    result = {
        "name": NAME,
        "machine": machine(),
        "figures": figures,
        "ratio": round(lora_peak / FINETRAINERS_LORA64_PEAK_GIB, 3) if lora_peak else None,
        "ratio_means": "peak GPU memory (GiB, torch.cuda.max_memory_allocated) of our CogVideoX-2b LoRA r128 alignment "
                       "step at 49x480x720, batch 1, gradient checkpointing, bf16 autocast, fp32 LoRA weights, divided by "
                       "finetrainers' published 21.564 GiB for LoRA r64 at 49x480x720, batch 1, gradient checkpointing, "
                       "precomputed latents; null without a GPU (--tiny)",
        "command": command(Path(__file__).name, argv).strip(),
    }
    return publish(out_dir, result, render_md(result))


def errors(result: dict[str, Any]) -> list[str]:
    return [f"{k}: {v['error']}" for k, v in result["figures"].items() if isinstance(v, dict) and "error" in v]


def _cell(section_: dict[str, Any], fmt: Callable[[dict[str, Any]], str]) -> str:
    return f"failed: {section_['error']}" if "error" in section_ else fmt(section_)


def render_md(res: dict[str, Any]) -> str:
    f, m = res["figures"], res["machine"]
    gib = lambda x: "n/a (CPU)" if x is None else f"{x} GiB"  # noqa: E731
    critic, vae, lora, full, gen = (f.get(k, {"error": "not run"}) for k in
                                    ("critic_scoring", "vae_encode", "align_lora", "align_full", "generation"))
    scale_dtype = f["settings"]["dtype"]
    rows = [
        ("Critic scoring: Qwen2-VL-2B-Instruct + LoRA r128 adapter, labels only",
         _cell(critic, lambda c: f"**{c['label_only']['videos_per_s']} videos/s** ({c['frames']} frames of "
                                 f"{c['frame_size'][0]}x{c['frame_size'][1]}, {c['visual_tokens_per_video']} visual tokens "
                                 f"per video, {c['videos_per_forward']} videos x 3 questions per forward)"),
         "none found; LiFT asks one question per `generate`"),
        ("Critic scoring with rationales",
         _cell(critic, lambda c: f"{c['with_rationale']['videos_per_s']} videos/s "
                                 f"({c['with_rationale']['new_tokens']} new tokens per answer)"), ""),
        (f"VAE encode, tiled and sliced, {vae.get('dtype', scale_dtype)}",
         _cell(vae, lambda v: f"**{v['s_per_clip']} s per {v['clip']} clip** (tiles of {v['tile_sample_min'][0]}x"
                              f"{v['tile_sample_min'][1]} px)"),
         f"{COGVIDEO_579_S_PER_CLIP[0]}-{COGVIDEO_579_S_PER_CLIP[1]} s per 49x480x720 clip on an A800 [2]"),
        (f"Alignment step, {lora.get('trains', 'LoRA')} (1-GPU profile)",
         _cell(lora, lambda a: f"**{a['step_s']} s/step, peak {gib(a['peak_gib'])}** ({a['trainable_params']:,} "
                               f"trainable params, {a['tokens']:,} tokens)"),
         f"LoRA r64: peak {FINETRAINERS_LORA64_PEAK_GIB} GiB (finetrainers) [1]"),
        ("Alignment step, full fine-tune of transformer_blocks (LiFT's recipe)",
         _cell(full, lambda a: f"**{a['step_s']} s/step, peak {gib(a['peak_gib'])}** ({a['trainable_params']:,} "
                               f"trainable params in fp32, AdamW)"),
         "none found"),
        (f"Generation, guidance {gen.get('guidance_scale', '')}",
         _cell(gen, lambda g: f"**{g['s_per_video']} s per {g['video']} video at {g['steps']} steps**, peak "
                              f"{gib(g['peak_gib'])}"),
         "none found for this GPU"),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    tiny = f["scale"].startswith("tiny")
    head = ("> **--tiny smoke run on CPU**: 1 layer, narrow widths, 9x48x48 videos, 2 steps. These figures exercise "
            "the code paths only; they are not measurements of the real workloads.\n\n" if tiny else "")
    failed = errors(res)
    return (
        "# LiFT's paper-scale workloads on one GPU (full-size CogVideoX-2b and Qwen2-VL-2B, random weights)\n\n"
        + head
        + f"Machine: {m['cpus']} CPUs, GPU: {m['gpu'] or 'none'}; torch {f['torch']}. Scale: {f['scale']}. "
          f"Wall time {f['wall_s']} s (budget {f['budget_s']} s).\n\n"
        "Models are built from the published configurations vendored in `lift_core/model_configs` with random "
        "weights (no download); every figure comes from the library code the stages run, with the settings of "
        "`configs/lift-cogvideox-2b-1gpu.yaml` (LoRA r128, Qwen2-VL-2B critic) and `configs/lift-cogvideox-2b.yaml` "
        "(LiFT's full fine-tune). Alignment: batch 1 from a cached latent distribution and text embedding (the "
        "VAE and T5 are not on the GPU), gradient checkpointing, bf16 autocast, trainable weights in fp32, AdamW, "
        "gradient clipping. Times are medians of the timed runs after a warm-up; peak memory is "
        "`torch.cuda.max_memory_allocated` from the model's build on, in GiB (bytes / 1024^3, as finetrainers reports).\n\n"
        "| measurement | ours | to compare with (public) |\n|---|---|---|\n"
        f"{table}\n\n"
        + (f"**Ratio: {res['ratio']}** ({res['ratio_means']}).\n\n" if res["ratio"] is not None else
           f"Ratio: n/a ({res['ratio_means']}).\n\n")
        + ("Failed measurements (the others ran): " + "; ".join(failed) + "\n\n" if failed else "")
        + "Caveats: random weights never emit an end-of-answer token, so rationales always run their full "
          "length; the critic's tokenizer is a local BPE with Qwen's special ids (the published vocabulary is not "
          "vendored), so caption token counts differ slightly; visual tokens, which dominate, are exact. "
          "Generation time includes the T5-XXL text encoder and the tiled VAE decode.\n\n"
        "Sources:\n\n"
        f"1. {FINETRAINERS_SOURCE}\n"
        f"2. {COGVIDEO_579_SOURCE}\n\n"
        f"Rerun: `{res['command']}`\n"
    )


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if errors(outcome) else 0)
