"""Real architectures at reduced depth, on CPU (issue 14).

The vendored published configurations (``lift_core/model_configs``) build CogVideoX-2b and
Qwen2-VL-2B-Instruct with their real widths, heads, patch sizes, channels and (Qwen) vocabulary, but one
transformer layer, one vision block and small videos. Each model is saved as a hub-style directory and
loaded back through the same ``from_pretrained`` paths that load the published checkpoints. Then the
real-scale code paths the tiny demo models skip run once:

- CogVideoX: the latent-cache encoder (``CacheEncoder``, what the cache actors run) encodes an mp4 with
  VAE tiling and slicing on, and a caption with the T5 encoder at 226 tokens; one alignment step
  (``RewardAlignRecipe`` in the loop's ``run_worker``) with gradient checkpointing, bf16 autocast, LiFT's
  optimiser and gradient accumulation, as LiFT's full fine-tune and as a LoRA r128;
- Qwen2-VL: one critic step (``CriticLoraRecipe`` in ``run_worker``) with LiFT's LoRA (r128, alpha 256,
  dropout 0.05 on every LLM linear), gradient checkpointing and bf16 autocast, then one scoring batch
  (``CriticScorer``) with the adapter it wrote, over the 151,936-token vocabulary.

Precision: the checkpoints are saved in bf16, as published. The steps compute in bf16 (bf16 autocast,
bf16 frozen weights) where this CPU does bf16 matrix products natively (oneDNN with AVX512-BF16 or AMX),
and in fp32 elsewhere, loading the same bf16 files: on an AVX2-only CPU PyTorch falls back to a
reference bf16 GEMM, single-threaded (measured here: a 244x1920 by 1920x1920 product takes 8.9 s in bf16
and 0.07 s in fp32), which made this module take over 40 minutes. Every other real-scale path (widths,
vocabulary, 226 text tokens, tiling, checkpointing, LoRA r128, LiFT's optimiser) runs either way; the
GPU benchmark (``benchmarks/gpu_real_scale.py``) runs them in bf16.

Weights are random. To keep the builds fast on two cores they are not drawn by each module's init but
tiled from one seeded Gaussian block (scaled 1/sqrt(fan_in); norms 1, biases 0). Tokenizers are trained
locally: T5's sentencepiece as in ``lift_core.t2v.builder`` (the T5 keeps its real width, heads and FF
size; its vocabulary is the local one), and for Qwen2-VL a byte-level BPE whose special tokens sit at the
published ids, so the vendored ``config.json`` is used unchanged apart from its depth.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest

import lift_core
from lift_core import storage
from lift_core.config import DIMENSIONS, LABELS, config_from_dict


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (PyTorch's oneDNN bf16 check)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


NATIVE_BF16 = native_bf16()
MIXED_PRECISION = "bf16" if NATIVE_BF16 else "no"  # the loop's setting for the steps below
COMPUTE_DTYPE = "bfloat16" if NATIVE_BF16 else "float32"  # t2v.dtype: what the frozen weights load as

MODEL_CONFIGS = Path(lift_core.__file__).resolve().parent / "model_configs"
COG = MODEL_CONFIGS / "cogvideox-2b"
QWEN = MODEL_CONFIGS / "qwen2-vl-2b-instruct"
LIFT_VALUES = {"Good": 0.9, "Normal": 0.2, "Bad": 0.05}  # LiFT's CogVideo/process_reward_score.py
QWEN_LLM_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# CogVideoX at reduced scale: 5 frames (4k+1) of 48x48 -> latents [16, 2, 6, 6]; the VAE tiles 32 px
# squares overlapping by a quarter (a 24 px stride: 3 latent pixels), so the tiled path really runs.
VIDEO = {"num_frames": 5, "height": 48, "width": 48}
VAE_TILING = {"tile_sample_min_height": 32, "tile_sample_min_width": 32,
              "tile_overlap_factor_height": 0.25, "tile_overlap_factor_width": 0.25}
FRAME_SIDE = 56  # the critic's frames: multiples of 28 (14 px patches merged 2x2) -> 4 tokens per 2 frames


def published(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def random_weights_(module: Any, seed: int) -> None:
    """Fill every parameter of a module built without init: a seeded Gaussian block of prime length,
    tiled and scaled by 1/sqrt(fan_in) for matrices and kernels; 1-d weights (norms) 1, biases 0."""
    import torch

    block = torch.randn(1_000_003, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                flat = p.view(-1)
                for start in range(0, flat.numel(), block.numel()):
                    stop = min(start + block.numel(), flat.numel())
                    flat[start:stop].copy_(block[: stop - start] * float(p[0].numel()) ** -0.5)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)


def build_without_init(factory):
    """``factory()`` with its parameters allocated in bf16 (the checkpoints' dtype) and not initialised:
    ``random_weights_`` fills them (a module's own init of 100M+ parameters takes tens of seconds here)."""
    import torch
    from transformers.initialization import no_init_weights

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with no_init_weights():
            return factory()
    finally:
        torch.set_default_dtype(default)


# --------------------------------------------------------------------------- the vendored files
def test_vendored_configs_are_the_published_architectures():
    """The numbers the paper-scale profiles and the GPU benchmark rely on, and their consistency."""
    from diffusers import CogVideoXDDIMScheduler
    from transformers import Qwen2VLConfig

    from lift_core.t2v.builder import COGVIDEOX_2B_SCHEDULER

    tr = published(COG / "transformer" / "config.json")
    assert tr["_class_name"] == "CogVideoXTransformer3DModel"
    assert (tr["num_layers"], tr["num_attention_heads"], tr["attention_head_dim"]) == (30, 30, 64)  # width 1920
    assert (tr["in_channels"], tr["out_channels"], tr["patch_size"]) == (16, 16, 2)
    assert (tr["sample_frames"], tr["sample_height"], tr["sample_width"]) == (49, 60, 90)  # 49 x 480 x 720
    assert (tr["text_embed_dim"], tr["max_text_seq_length"]) == (4096, 226)
    assert tr["use_rotary_positional_embeddings"] is False  # 2B: sincos; the 5B uses RoPE
    vae = published(COG / "vae" / "config.json")
    assert vae["block_out_channels"] == [128, 256, 256, 512] and vae["latent_channels"] == 16
    assert vae["temporal_compression_ratio"] == 4 and vae["scaling_factor"] == pytest.approx(1.15258426)
    te = published(COG / "text_encoder" / "config.json")
    assert te["d_model"] == tr["text_embed_dim"] and (te["num_heads"], te["d_kv"], te["d_ff"]) == (64, 64, 10240)
    sched = published(COG / "scheduler" / "scheduler_config.json")
    assert {k: v for k, v in sched.items() if k in COGVIDEOX_2B_SCHEDULER} == COGVIDEOX_2B_SCHEDULER
    assert CogVideoXDDIMScheduler.from_config(sched).config.prediction_type == "v_prediction"

    q = published(QWEN / "config.json")
    conf = Qwen2VLConfig(**q)
    text, vision = conf.text_config, conf.vision_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (1536, 8960, 28)
    assert (text.num_attention_heads, text.num_key_value_heads, text.vocab_size) == (12, 2, 151936)
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (vision.depth, vision.embed_dim, vision.num_heads, vision.hidden_size) == (32, 1280, 16, 1536)
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (14, 2, 2)
    tok_cfg = published(QWEN / "tokenizer_config.json")
    ids = {v["content"]: int(k) for k, v in tok_cfg["added_tokens_decoder"].items()}
    assert ids["<|endoftext|>"] == q["bos_token_id"] and ids["<|im_end|>"] == q["eos_token_id"]
    assert (ids["<|vision_start|>"], ids["<|vision_end|>"]) == (q["vision_start_token_id"], q["vision_end_token_id"])
    assert (ids["<|image_pad|>"], ids["<|video_pad|>"]) == (q["image_token_id"], q["video_token_id"])
    assert published(QWEN / "chat_template.json")["chat_template"] == tok_cfg["chat_template"]
    pre = published(QWEN / "preprocessor_config.json")
    assert (pre["patch_size"], pre["merge_size"], pre["temporal_patch_size"]) == (14, 2, 2)


# --------------------------------------------------------------------------- CogVideoX-2b
def build_cogvideox(out_dir: Path) -> str:
    """CogVideoX-2b's published components with 1 transformer block and a 1-layer T5, saved in bf16 as
    a diffusers directory (the layout of THUDM/CogVideoX-2b)."""
    import tempfile

    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from lift_core.t2v.builder import load_t5_tokenizer, train_sentencepiece

    with tempfile.TemporaryDirectory(prefix="lift-real-t2v-") as tmp:
        spm_dir = os.path.dirname(train_sentencepiece(os.path.join(tmp, "spm"), 500))
        tok = load_t5_tokenizer(spm_dir)
        te_cfg = {k: v for k, v in published(COG / "text_encoder" / "config.json").items() if k != "architectures"}
        parts = {
            "transformer": build_without_init(lambda: CogVideoXTransformer3DModel.from_config(
                {**published(COG / "transformer" / "config.json"), "num_layers": 1})),
            "vae": build_without_init(lambda: AutoencoderKLCogVideoX.from_config(published(COG / "vae" / "config.json"))),
            "text_encoder": build_without_init(lambda: T5EncoderModel(T5Config(
                **{**te_cfg, "num_layers": 1, "num_decoder_layers": 1, "vocab_size": len(tok)}))),
        }
        for seed, module in enumerate(parts.values()):
            random_weights_(module, seed)
            assert {p.dtype for p in module.parameters()} == {torch.bfloat16}
        pipe = CogVideoXPipeline(tokenizer=tok, scheduler=CogVideoXDDIMScheduler.from_config(
            published(COG / "scheduler" / "scheduler_config.json")), **parts)
        pipe.save_pretrained(out_dir)
        shutil.copy(os.path.join(spm_dir, "spiece.model"), out_dir / "tokenizer" / "spiece.model")
    return str(out_dir)


@pytest.fixture(scope="module")
def cogvideox_dir(tmp_path_factory) -> str:
    return build_cogvideox(tmp_path_factory.mktemp("real-t2v") / "CogVideoX-2b-1layer")


def t2v_config(run_root: Path, model: str, **align: Any):
    train = {"num_workers": 1, "batch_size": 2, "grad_accum_steps": 2, "max_steps": 1, "lr": 1e-5,
             "betas": [0.9, 0.95], "weight_decay": 1e-4, "lr_schedule": "cosine", "warmup_steps": 0,
             "gradient_checkpointing": True, "mixed_precision": MIXED_PRECISION, "checkpoint_every": 1}
    return config_from_dict({
        "run_root": str(run_root),
        "t2v": {"model": model, "dtype": COMPUTE_DTYPE, "max_sequence_length": 226, **VIDEO},
        "align": {"reward_column": "reward_lift", "cpus_per_worker": 2, **align, "train": train},
    })


@pytest.fixture(scope="module")
def t2v_cache(cogvideox_dir, tmp_path_factory) -> dict[str, Any]:
    """One mp4 and two captions through the cache encoder the cache actors run, VAE tiling on."""
    from dataclasses import asdict

    from lift_core.t2v.cache import CACHE_JOB_SCHEMA, CacheEncoder, TensorCache, caption_key, namespaces
    from lift_core.video import synth
    from lift_core.video.io import write_mp4

    root = tmp_path_factory.mktemp("real-t2v-cache")
    cfg = t2v_config(root, cogvideox_dir)
    spec = synth.sample_spec(np.random.RandomState(0))
    uri = write_mp4(str(root / "clip.mp4"), synth.render(spec, VIDEO["height"], VIDEO["width"], VIDEO["num_frames"], 0))
    video_id = storage.content_id(uri)
    captions = [spec.caption, f"{spec.caption}, filmed at night"]
    ns = namespaces(cfg, cogvideox_dir)
    encoder = CacheEncoder(cogvideox_dir, cfg.t2v.model_dump(mode="json"), asdict(ns), num_threads=2)
    vae = encoder.pipe.vae
    vae.enable_tiling(**VAE_TILING)
    vae.enable_slicing()
    tiles: list[Any] = []
    tiled_encode = vae.tiled_encode
    vae.tiled_encode = lambda x: tiles.append(tuple(x.shape)) or tiled_encode(x)
    jobs = [{"kind": "video", "key": video_id, "uri": uri, "caption": None}]
    jobs += [{"kind": "text", "key": caption_key(c), "uri": None, "caption": c} for c in captions]
    result = encoder(pa.Table.from_pylist(jobs, schema=CACHE_JOB_SCHEMA)).to_pylist()
    return {"cfg": cfg, "ns": ns, "video_id": video_id, "captions": captions, "result": result, "tiles": tiles,
            "latents": TensorCache(ns.latents_uri).get_many([video_id])[video_id],
            "text": TensorCache(ns.text_uri).get_many([caption_key(c) for c in captions])}


@pytest.mark.slow
def test_cogvideox_cache_encodes_with_the_real_vae_and_text_encoder(t2v_cache):
    assert all(r["error"] is None for r in t2v_cache["result"]), t2v_cache["result"]
    assert t2v_cache["tiles"], "VAE tiling was on but the tiled encoder never ran"
    latents = t2v_cache["latents"]  # mean | logvar of 16 channels, 5 frames -> 2, 48 px -> 6
    assert tuple(latents.shape) == (32, 2, 6, 6) and str(latents.dtype) == f"torch.{COMPUTE_DTYPE}"
    assert bool(latents.float().isfinite().all())
    for embeds in t2v_cache["text"].values():
        assert tuple(embeds.shape) == (226, 4096) and bool(embeds.float().isfinite().all())


class ProbedAlignRecipe:
    """RewardAlignRecipe, recording what the loop runs the loss under."""

    seen: ClassVar[dict[str, Any]] = {}

    def __new__(cls):
        import torch

        from lift_core.t2v.align import RewardAlignRecipe

        class Probe(RewardAlignRecipe):
            def loss(self, ctx, model, net, batch):
                inner = getattr(net, "module", net)
                cls.seen.update(checkpointing=inner.is_gradient_checkpointing,
                                autocast=torch.is_autocast_enabled("cpu"),
                                autocast_dtype=torch.get_autocast_dtype("cpu"),
                                trainable_dtypes={p.dtype for p in inner.parameters() if p.requires_grad},
                                trainable=sum(p.numel() for p in inner.parameters() if p.requires_grad),
                                frozen_dtypes={p.dtype for p in inner.parameters() if not p.requires_grad})
                return super().loss(ctx, model, net, batch)

        return Probe()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_cogvideox_alignment_step(mode, cogvideox_dir, t2v_cache, tmp_path):
    """One optimizer step of LiFT's loss (2 samples, 2 micro-batches) on the real transformer block."""
    import torch

    from lift_core.t2v.spec import get_spec
    from lift_core.train import LoopSettings, run_worker

    lora = {"r": 128, "alpha": 128, "target_modules": ["to_q", "to_k", "to_v", "to_out.0"]}
    cfg = t2v_config(tmp_path, cogvideox_dir, mode=mode, lora=lora)
    settings = LoopSettings.for_stage(cfg.align)
    ns = t2v_cache["ns"]
    samples = [{"video_id": t2v_cache["video_id"], "caption": c, "source": "generated", "weight": w}
               for c, w in zip(t2v_cache["captions"], (0.9, 0.05))]
    out = tmp_path / "align"
    config = {"cfg": cfg.model_dump(mode="json"), "settings": settings, "section": "align.train",
              "out_uri": str(out), "model": cogvideox_dir, "samples": samples, "latents_uri": ns.latents_uri,
              "text_uri": ns.text_uri, "lora_uri": str(out / "lora"), "weights_uri": str(out / "weights")}
    ProbedAlignRecipe.seen.clear()
    run_worker(ProbedAlignRecipe(), config)

    seen = ProbedAlignRecipe.seen
    assert seen["checkpointing"] and seen["autocast"] == NATIVE_BF16
    assert seen["autocast_dtype"] == torch.bfloat16 or not NATIVE_BF16
    assert seen["trainable_dtypes"] == {torch.float32}  # trainable weights in fp32, whatever t2v.dtype
    log = storage.read_table(str(out / "train_log.parquet")).to_pylist()
    assert len(log) == 1 and np.isfinite(log[0]["loss"]) and log[0]["grad_norm"] > 0
    assert log[0]["mean_weight"] == pytest.approx((0.9 + 0.05) / 2)
    assert log[0]["lr"] == pytest.approx(1e-5)
    spec = get_spec("cogvideox")
    if mode == "full":
        assert seen["frozen_dtypes"] == set() and seen["trainable"] > 60_000_000  # one 1920-wide block and more
        trained = spec.load_denoiser(str(out / "weights" / "transformer"))
        assert trained.config.num_attention_heads * trained.config.attention_head_dim == 1920
        base = dict(spec.load_denoiser(os.path.join(cogvideox_dir, "transformer"), "float32").named_parameters())
        moved = [n for n, p in trained.named_parameters() if not torch.equal(p, base[n].to(p.dtype))]
        assert any(n.startswith("transformer_blocks.0.") for n in moved)
    else:
        assert seen["frozen_dtypes"] == {getattr(torch, COMPUTE_DTYPE)}
        assert 0 < seen["trainable"] < 5_000_000  # 4 projections x r128 x (1920 + 1920)
        pipe = spec.load_pipeline(cogvideox_dir, "bfloat16", parts="denoiser")
        spec.load_lora(pipe, str(out / "lora"))  # the diffusers-format LoRA loads into the pipeline
        assert "aligned" in pipe.get_list_adapters().get("transformer", [])


# --------------------------------------------------------------------------- Qwen2-VL-2B-Instruct
def qwen_tokenizer_json() -> str:
    """A byte-level BPE trained on LiFT's questions and answers, its vocabulary padded with unused entries
    so that the special tokens take the published ids (151643 ...)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    from lift_core.critic.builder import tokenizer_corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainers.BpeTrainer(
        vocab_size=2000, min_frequency=1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    specials = sorted((int(k), v["content"]) for k, v in published(QWEN / "tokenizer_config.json")["added_tokens_decoder"].items())
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for i in range(len(vocab), specials[0][0]):
        vocab[f"<|lift_unused_{i}|>"] = i
    tok = Tokenizer.from_str(json.dumps(data))
    tok.add_special_tokens([AddedToken(content, special=True, normalized=False) for _, content in specials])
    assert all(tok.token_to_id(content) == i for i, content in specials)
    return tok.to_str()


def build_qwen2vl(out_dir: Path) -> str:
    """Qwen2-VL-2B-Instruct's published config with 1 LLM layer and 1 vision block, saved in bf16 with the
    published processor files and a local tokenizer (the layout of Qwen/Qwen2-VL-2B-Instruct)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    q = published(QWEN / "config.json")
    conf = Qwen2VLConfig(**{**q, "num_hidden_layers": 1, "vision_config": {**q["vision_config"], "depth": 1}})
    model = build_without_init(lambda: Qwen2VLForConditionalGeneration(conf))
    random_weights_(model, seed=3)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model.save_pretrained(out_dir)
    (out_dir / "tokenizer.json").write_text(qwen_tokenizer_json())
    for name in ("preprocessor_config.json", "chat_template.json", "tokenizer_config.json"):
        shutil.copy(QWEN / name, out_dir / name)
    return str(out_dir)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> str:
    return build_qwen2vl(tmp_path_factory.mktemp("real-critic") / "Qwen2-VL-2B-Instruct-1layer")


def rated_videos(root: Path, n: int = 4) -> dict[str, Any]:
    """``n`` synthetic rated videos (8 frames of 56 px), the last in the test split: manifest and frames."""
    from lift_core.schemas import MANIFEST_SCHEMA, rows_to_table
    from lift_core.video import synth
    from lift_core.video.frames import frames_table

    rng = np.random.RandomState(0)
    manifest, frames = [], []
    for i in range(n):
        spec = synth.sample_spec(rng, levels=(i % 3, (i + 1) % 3, (i + 2) % 3))
        video = synth.render(spec, FRAME_SIDE, FRAME_SIDE, 8, seed=i)
        vid = storage.sha256_hex(video.tobytes())[:16]
        labels, reasons = spec.labels(), spec.reasons()
        manifest.append({"video_id": vid, "uri": f"memory://real-arch/{i}.mp4", "caption": spec.caption,
                         "source": "lift-hra", "split": "test" if i == n - 1 else "train",
                         **{f"label_{d}": labels[d] for d in DIMENSIONS}, **{f"reason_{d}": reasons[d] for d in DIMENSIONS}})
        frames.append({"video_id": vid, "frames": video, "frame_indices": list(range(8)), "num_frames_total": 8,
                       "fps": 8.0})
    storage.write_table(str(root / "manifest.parquet"), rows_to_table(manifest, MANIFEST_SCHEMA))
    storage.write_table(str(root / "frames" / "part-0.parquet"), frames_table(frames))
    return {"manifest": str(root / "manifest.parquet"), "frames": str(root / "frames"), "rows": manifest,
            "videos": [f["frames"] for f in frames]}


def critic_config(run_root: Path, model: str):
    return config_from_dict({
        "run_root": str(run_root),
        "decode": {"frames": 8, "height": FRAME_SIDE, "width": FRAME_SIDE},
        "critic": {
            "model": model, "backbone": "qwen2-vl", "cpus_per_worker": 2, "eval_batch_size": 3,
            # LiFT's critic LoRA (LiFT-Critic/train/train_critic_13b.sh and VILA's defaults)
            "lora": {"r": 128, "alpha": 256, "dropout": 0.05, "target_modules": QWEN_LLM_LINEARS},
            "train": {"num_workers": 1, "batch_size": 2, "grad_accum_steps": 2, "max_steps": 1, "lr": 1e-5,
                      "lr_schedule": "cosine", "warmup_steps": 0, "gradient_checkpointing": True,
                      "mixed_precision": MIXED_PRECISION, "checkpoint_every": 1},
        },
        "score": {"batch_size": 2, "max_new_tokens": 4, "lift_values": LIFT_VALUES},
    })


class ProbedCriticRecipe:
    """CriticLoraRecipe, recording what the loop runs the loss under."""

    seen: ClassVar[dict[str, Any]] = {}

    def __new__(cls):
        import torch

        from lift_core.critic.train import CriticLoraRecipe

        class Probe(CriticLoraRecipe):
            def loss(self, ctx, model, net, batch):
                base = model.module.get_base_model()
                cls.seen.update(checkpointing=base.is_gradient_checkpointing,
                                autocast=torch.is_autocast_enabled("cpu"),
                                autocast_dtype=torch.get_autocast_dtype("cpu"),
                                trainable=[n for n, p in model.module.named_parameters() if p.requires_grad],
                                trainable_dtypes={p.dtype for p in model.module.parameters() if p.requires_grad},
                                vocab=int(base.get_output_embeddings().weight.shape[0]))
                return super().loss(ctx, model, net, batch)

        return Probe()


@pytest.fixture(scope="module")
def critic_step(qwen_dir, tmp_path_factory) -> dict[str, Any]:
    from lift_core.critic.train_stage import plan_training
    from lift_core.train import run_worker

    root = tmp_path_factory.mktemp("real-critic-run")
    data = rated_videos(root / "data")
    cfg = critic_config(root, qwen_dir)
    plan = plan_training(cfg, data["manifest"], data["frames"])
    ProbedCriticRecipe.seen.clear()
    run_worker(ProbedCriticRecipe(), plan.config)
    return {"cfg": cfg, "plan": plan, "data": data, "seen": dict(ProbedCriticRecipe.seen)}


@pytest.mark.slow
def test_qwen2vl_critic_lora_step(critic_step):
    import torch

    seen, plan = critic_step["seen"], critic_step["plan"]
    assert seen["checkpointing"] and seen["autocast"] == NATIVE_BF16
    assert seen["autocast_dtype"] == torch.bfloat16 or not NATIVE_BF16
    assert seen["vocab"] == 151936
    # LiFT's --lora_llm: LoRA on the LLM's linears only; the vision tower and the projector stay frozen.
    assert seen["trainable"] and all("lora_" in n and "language_model" in n for n in seen["trainable"])
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in seen["trainable"]} == set(QWEN_LLM_LINEARS)
    assert seen["trainable_dtypes"] == {torch.float32}
    log = storage.read_table(plan.outputs["train_log"]).to_pylist()
    assert len(log) == 1 and np.isfinite(log[0]["loss"]) and log[0]["grad_norm"] > 0
    adapter = json.loads(storage.read_text(storage.join(plan.outputs["adapter"], "adapter_config.json")))
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (128, 256, 0.05)
    assert set(adapter["target_modules"]) == set(QWEN_LLM_LINEARS)
    preds = storage.read_table(plan.outputs["predictions"]).to_pylist()
    assert len(preds) == len(DIMENSIONS)  # the held-out video, one row per question
    assert all(abs(p["p_good"] + p["p_normal"] + p["p_bad"] - 1) < 1e-5 for p in preds)


@pytest.mark.slow
def test_qwen2vl_scoring_batch_with_the_trained_adapter(critic_step, qwen_dir):
    """One batch through CriticScorer: base + adapter loaded as scoring loads them, two videos x three
    questions in one left-padded forward, and one short greedy rationale over the real vocabulary."""
    from lift_core.critic.backbone import critic_id
    from lift_core.critic.scoring import CriticScorer

    cfg, plan, data = critic_step["cfg"], critic_step["plan"], critic_step["data"]
    scorer = CriticScorer(plan.outputs["adapter"], model=qwen_dir, critic=cfg.critic, score=cfg.score,
                          frame_size=(FRAME_SIDE, FRAME_SIDE), device="cpu", rationale=True)
    assert scorer.critic_id == critic_id(qwen_dir, plan.outputs["adapter"])
    meta = [{k: r[k] for k in ("video_id", "uri", "caption", "source")} for r in data["rows"][:2]]
    rows = scorer.score_rows(meta, data["videos"][:2])
    assert [r["video_id"] for r in rows] == [m["video_id"] for m in meta]
    lift_means = {round(sum(c) / 3, 6) for c in
                  ((a, b, d) for a in LIFT_VALUES.values() for b in LIFT_VALUES.values() for d in LIFT_VALUES.values())}
    for r in rows:
        for d in DIMENSIONS:
            assert abs(r[f"p_good_{d}"] + r[f"p_normal_{d}"] + r[f"p_bad_{d}"] - 1) < 1e-5
            assert r[f"label_{d}"] in LABELS and r[f"reason_{d}"] is not None
        assert round(r["reward_lift"], 6) in lift_means  # LiFT's 0.9 / 0.2 / 0.05, averaged
        assert 0.0 <= r["reward"] <= 1.0
