"""Pre-training of the tiny T2V base on the synthetic world (``t2v.pretrain``; the demo, not the paper).

A randomly initialised tiny CogVideoX draws noise, so a critic scores noise and alignment has nothing
to follow. Pre-training makes the base draw the synthetic world (saturated shapes of a colour moving
over a dark background) and follow its captions only partly, which leaves alignment room to improve.

Two recipes of the one training loop (``lift_core.train``), each resumable from its checkpoints:

1. ``VaeRecipe``: the VAE learns to reconstruct clips (MSE plus a small KL term). Its posterior starts
   nearly deterministic (``initial_logvar``): with the default unit variance the decoder first sees
   only noise and learns the mean frame, for hundreds of steps.
2. The VAE's ``scaling_factor`` is set so that latents have unit variance, as CogVideoX's does, and
   the pixel oracle reads its reconstructions of held-apart clips (``vae_reconstruction`` in the
   build record): what the decoder cannot draw, no denoiser on it will.
3. ``DenoiserRecipe``: the transformer learns the family's own diffusion loss
   (``lift_core.t2v.loss.per_sample_loss``) on latents of fresh clips and the T5 embeddings of their
   captions.

Clips are rendered by ``lift_core.video.synth`` at the T2V's shape, clean and smooth (the "real"
world), from the combinations that are not held out: evaluation prompts never appear in pre-training.
A clip is a function of (seed, stream position), so a resumed run sees the same data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from lift_core import storage
from lift_core.config import PipelineConfig, T2VPretrainConfig
from lift_core.train import TrainModel, WorkerContext
from lift_core.train.outputs import write_dir
from lift_core.train.trainable import full_state, load_full_state

log = logging.getLogger("lift.t2v")

STAGE = "pretrain_t2v"


# --------------------------------------------------------------------------- data
def clip_seed(run_seed: int, position: int, stream: str) -> int:
    digest = hashlib.sha256(f"lift-pretrain:{stream}:{int(run_seed)}:{int(position)}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


NOISE_TRIES = 8  # redraws of a noisy caption that left the training combinations


def noisy_caption(rng: np.random.RandomState, combo: tuple[str, str, str, str], noise: dict[str, float],
                  allowed: set[tuple[str, str, str, str]]) -> str:
    """The caption of ``combo`` (count, colour, shape, direction), each attribute's word replaced by
    another value with its probability in ``noise``. A noisy caption that is not in ``allowed`` (the
    training combinations) is redrawn, and after ``NOISE_TRIES`` the true caption is kept: validation
    and test captions never appear in pre-training, not even as noise."""
    from lift_core.video.synth import COLOURS, COUNTS, DIRECTIONS, SHAPES, caption_text

    values = {"count": list(COUNTS), "colour": list(COLOURS), "shape": list(SHAPES), "direction": list(DIRECTIONS)}
    order = ("count", "colour", "shape", "direction")
    draws = [(rng.random_sample(len(order)), rng.randint(1 << 30, size=len(order))) for _ in range(NOISE_TRIES)]
    for flips, picks in draws:  # a fixed number of draws: the stream's randomness never depends on them
        words = list(combo)
        for i, attr in enumerate(order):
            if flips[i] < noise.get(attr, 0.0):
                others = [v for v in values[attr] if v != combo[i]]
                words[i] = others[picks[i] % len(others)]
        if tuple(words) in allowed:
            return caption_text(*words)
    return caption_text(*combo)


def render_clips(cfg: PipelineConfig, positions: Sequence[int], seed: int,
                 stream: str = "train") -> tuple[np.ndarray, list[str]]:
    """uint8 ``[B, T, H, W, 3]`` clean clips of training combinations and their captions; on the
    ``denoiser`` stream the captions carry ``t2v.pretrain.caption_noise`` (the clips stay true)."""
    from lift_core.video.synth import SynthSpec, render, training_combinations

    combos = training_combinations(cfg.data.split)
    allowed = set(combos)
    noise = cfg.t2v.pretrain.caption_noise if (cfg.t2v.pretrain is not None and stream == "denoiser") else {}
    t = cfg.t2v
    frames, captions = [], []
    for p in positions:
        rng = np.random.RandomState(clip_seed(seed, p, stream))
        count, colour, shape, direction = combos[rng.randint(len(combos))]
        spec = SynthSpec(colour, shape, count, direction, "smooth", "clean", colour, shape, count)
        frames.append(render(spec, t.height, t.width, t.num_frames, seed=int(rng.randint(1 << 30))))
        captions.append(noisy_caption(rng, (count, colour, shape, direction), noise, allowed) if noise
                        else spec.caption)
    return np.stack(frames), captions


def _pixels(frames: np.ndarray, device: Any = "cpu") -> Any:
    from lift_core.t2v.spec import frames_to_pixels

    return frames_to_pixels(frames).to(device)


# --------------------------------------------------------------------------- recipes
class VaeRecipe:
    """The VAE reconstructs clips: ``mean((decode(z) - x)^2) + kl_weight * KL``, z drawn from the posterior."""

    log_columns = [("loss", pa.float64()), ("reconstruction", pa.float64()), ("kl", pa.float64())]

    def build(self, ctx: WorkerContext) -> TrainModel:
        import torch
        from diffusers import AutoencoderKLCogVideoX

        vae = AutoencoderKLCogVideoX.from_pretrained(os.path.join(ctx.config["model"], "vae"))
        p: T2VPretrainConfig = ctx.cfg.t2v.pretrain
        with torch.no_grad():  # the encoder's last conv gives [mean, logvar]: start with a small variance
            vae.encoder.conv_out.conv.bias[vae.config.latent_channels:] = p.initial_logvar
        vae.requires_grad_(True)
        return TrainModel(module=vae, param_groups=[{"params": list(vae.parameters())}],
                          trainable_state=lambda: full_state(vae), load_trainable_state=lambda st: load_full_state(vae, st),
                          handles={})

    def make_batch(self, ctx: WorkerContext, model: TrainModel, positions: Sequence[int]) -> Any:
        frames, _ = render_clips(ctx.cfg, positions, ctx.settings.seed, "vae")
        return _pixels(frames, ctx.device)

    def normalizer(self, batch: Any) -> float:
        return float(batch.shape[0])

    def loss(self, ctx: WorkerContext, model: TrainModel, net: Any, batch: Any) -> tuple[Any, dict[str, Any]]:
        posterior = net.encode(batch).latent_dist
        recon = net.decode(posterior.sample()).sample
        mse = ((recon.float() - batch.float()) ** 2).reshape(batch.shape[0], -1).mean(dim=1)
        kl = posterior.kl().float().reshape(batch.shape[0], -1).mean(dim=1)
        total = (mse + ctx.cfg.t2v.pretrain.kl_weight * kl).sum()
        return total, {"loss": total, "mse": mse.sum(), "kl": kl.sum(), "n": float(batch.shape[0])}

    def log_row(self, stats: dict[str, float]) -> dict[str, float]:
        n = stats["n"]
        return {"loss": stats["loss"] / n, "reconstruction": stats["mse"] / n, "kl": stats["kl"] / n}

    def finalize(self, ctx: WorkerContext, model: TrainModel, log_rows: list[dict[str, Any]]) -> None:
        write_dir(ctx.config["vae_uri"], lambda d: model.module.save_pretrained(d))


class DenoiserRecipe:
    """The family's diffusion loss on latents of fresh clips, weight 1 (no reward: this is pre-training)."""

    log_columns = [("loss", pa.float64())]

    def build(self, ctx: WorkerContext) -> TrainModel:
        from lift_core.t2v.spec import get_spec
        from lift_core.video.synth import caption_text, training_combinations

        spec = get_spec(ctx.cfg.t2v.family)
        pipe = spec.load_pipeline(ctx.config["model"], "float32", "cpu")
        inner = spec.denoiser(pipe)
        inner.requires_grad_(True)
        pipe.vae.requires_grad_(False)
        captions = sorted(caption_text(*c) for c in training_combinations(ctx.cfg.data.split))
        embeds = dict(zip(captions, spec.encode_text(pipe, captions, ctx.cfg.t2v.max_sequence_length)))
        return TrainModel(module=inner, param_groups=[{"params": list(inner.parameters())}],
                          trainable_state=lambda: full_state(inner), load_trainable_state=lambda st: load_full_state(inner, st),
                          handles={"spec": spec, "pipe": pipe, "embeds": embeds})

    def make_batch(self, ctx: WorkerContext, model: TrainModel, positions: Sequence[int]) -> Any:
        from lift_core.t2v.loss import make_batch, sample_seed

        spec, pipe = model.handles["spec"], model.handles["pipe"]
        frames, captions = render_clips(ctx.cfg, positions, ctx.settings.seed, "denoiser")
        dists = spec.encode_video_dist(pipe, _pixels(frames))
        return make_batch(spec, pipe, list(dists), [model.handles["embeds"][c] for c in captions],
                          [1.0] * len(captions), [sample_seed(ctx.settings.seed, p) for p in positions],
                          device=ctx.device)

    def normalizer(self, batch: Any) -> float:
        return float(batch.rewards.shape[0])

    def loss(self, ctx: WorkerContext, model: TrainModel, net: Any, batch: Any) -> tuple[Any, dict[str, Any]]:
        from lift_core.t2v.loss import per_sample_loss

        total = per_sample_loss(model.handles["spec"], model.handles["pipe"], net, batch).sum()
        return total, {"loss": total, "n": float(batch.rewards.shape[0])}

    def log_row(self, stats: dict[str, float]) -> dict[str, float]:
        return {"loss": stats["loss"] / stats["n"]}

    def finalize(self, ctx: WorkerContext, model: TrainModel, log_rows: list[dict[str, Any]]) -> None:
        spec = model.handles["spec"]
        write_dir(ctx.config["denoiser_uri"], lambda d: spec.save_denoiser(model.module, d))


# --------------------------------------------------------------------------- driver
def latent_scaling_factor(cfg: PipelineConfig, vae: Any, n_clips: int) -> float:
    """``1 / std`` of the posterior means of ``n_clips`` held-apart clips (CogVideoX scales latents so)."""
    import torch

    frames, _ = render_clips(cfg, range(n_clips), cfg.t2v.pretrain.vae.seed, "scaling")
    with torch.no_grad():
        mean = vae.encode(_pixels(frames)).latent_dist.mean
    return float(1.0 / mean.float().std().clamp_min(1e-6))


def reconstruction_adherence(frames: np.ndarray, captions: Sequence[str], reconstruct: Any) -> dict[str, float]:
    """Mean pixel-oracle adherence, per attribute and overall, of ``reconstruct(frames)`` (uint8
    ``[B, T, H, W, 3]`` in and out) against the clips' captions. Of a VAE's reconstructions, it says
    what its decoder can draw at all, so what no denoiser on its latents can learn: an attribute the
    reconstructions lose is out of reach of pre-training and alignment alike."""
    from lift_core.metrics.oracle import ATTRIBUTES, adherence

    out = np.asarray(reconstruct(frames))
    if out.shape != frames.shape or out.dtype != np.uint8:
        raise ValueError(f"reconstruct must return uint8 {frames.shape}, got {out.dtype} {out.shape}")
    rows = [adherence(v, c) for v, c in zip(out, captions)]
    return {k: float(np.mean([r[k] for r in rows])) for k in (*ATTRIBUTES, "overall")}


def vae_reconstruct(vae: Any, frames: np.ndarray) -> np.ndarray:
    """uint8 clips through the VAE's posterior mean and decoder."""
    import torch

    with torch.no_grad():
        x = vae.decode(vae.encode(_pixels(frames)).latent_dist.mean).sample
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()


RECONSTRUCTION_CLIPS = 32  # held-apart clips whose reconstructions the oracle reads (a few seconds)


def pretrain_tiny_t2v(cfg: PipelineConfig, model_dir: str, record: dict[str, Any],
                      progress: Any = None) -> dict[str, Any]:
    """Pre-train the freshly built tiny model in the local directory ``model_dir`` in place; training
    runs and checkpoints live in the ``pretrain_t2v`` stage folder of ``record``, so an interrupted
    build resumes. Returns the figures for the build record."""
    from diffusers import AutoencoderKLCogVideoX

    from lift_core.t2v.spec import get_spec
    from lift_core.train import LoopSettings
    from lift_core.train.loop import fit_once

    p = cfg.t2v.pretrain
    out = storage.record_stage_dir(cfg.run_root, STAGE, record)
    figures: dict[str, Any] = {"stage_dir": out}
    for name, recipe, section in (("vae", VaeRecipe(), p.vae), ("denoiser", DenoiserRecipe(), p.denoiser)):
        run_out = storage.join(out, name)
        config = {"section": f"t2v.pretrain.{name}", "model": model_dir,
                  "vae_uri": storage.join(run_out, "vae"), "denoiser_uri": storage.join(run_out, "transformer")}
        log.info("pre-training the tiny T2V %s: %d steps", name, section.max_steps)
        figures[name] = fit_once(recipe, cfg, LoopSettings.for_stage(p, section), config, run_out,
                                 f"lift-pretrain-t2v-{name}-{os.path.basename(out)}", f"t2v pre-training ({name})",
                                 progress.for_stage(f"t2v-{name}") if hasattr(progress, "for_stage") else progress)
        if name == "vae":
            vae = AutoencoderKLCogVideoX.from_pretrained(storage.local_dir(config["vae_uri"], "config.json")).eval()
            vae.register_to_config(scaling_factor=latent_scaling_factor(cfg, vae, p.scaling_clips))
            figures["scaling_factor"] = float(vae.config.scaling_factor)
            clips, captions = render_clips(cfg, range(RECONSTRUCTION_CLIPS), p.vae.seed, "reconstruction")
            figures["vae_reconstruction"] = reconstruction_adherence(clips, captions, lambda f: vae_reconstruct(vae, f))
            log.info("tiny T2V VAE: pixel-oracle adherence of its reconstructions %s", figures["vae_reconstruction"])
            shutil.rmtree(os.path.join(model_dir, "vae"))
            vae.save_pretrained(os.path.join(model_dir, "vae"))
        else:
            inner = get_spec(cfg.t2v.family).load_denoiser(storage.local_dir(config["denoiser_uri"], "config.json"))
            shutil.rmtree(os.path.join(model_dir, "transformer"))
            inner.save_pretrained(os.path.join(model_dir, "transformer"))
    return figures


__all__ = ["DenoiserRecipe", "VaeRecipe", "latent_scaling_factor", "pretrain_tiny_t2v", "reconstruction_adherence",
           "render_clips", "vae_reconstruct"]
