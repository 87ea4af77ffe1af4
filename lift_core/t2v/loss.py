"""LiFT's reward-weighted diffusion loss (DESIGN.md, "Loss").

Per sample i::

    loss_i = w_i * lambda(t) * mean( (prediction - target)^2 )

where the model family gives the prediction, its target and ``lambda(t)`` (``T2VModelSpec``). For
CogVideoX that is LiFT's loss: the v-prediction turned into x0 (``scheduler.get_velocity(v, x_t, t)``,
as diffusers' ``train_cogvideox_lora.py`` does) against x0, weighted by ``1 / (1 - alphabar_t)``, which
reaches ~1,200 near t = 0, so training clips gradients. ``w_i`` is the critic's reward. The batch
loss is the mean over the (global) batch.

Randomness (the latent sample, the noise, the timestep) comes from one generator per sample, seeded
from (run seed, sample position in the data stream): a sample gets the same draw whichever worker
handles it, so results do not depend on the world size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

from lift_core.t2v.spec import T2VModelSpec


def sample_seed(run_seed: int, position: int) -> int:
    """The seed of the sample at ``position`` of the training data stream."""
    digest = hashlib.sha256(f"lift-align:{int(run_seed)}:{int(position)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFFFFFFFFFFFFFF


@dataclass
class TrainBatch:
    x0: Any  # scaled clean latents in the denoiser's layout
    text_embeds: Any  # [B, L, D]
    rewards: Any  # [B] per-sample weights w_i
    noise: Any
    timesteps: Any  # [B]: integer timesteps (DDPM) or float sigmas (flow matching), as the family draws them


def make_batch(
    spec: T2VModelSpec,
    pipe: Any,
    latent_dists: Sequence[Any],
    text_embeds: Sequence[Any],
    rewards: Sequence[float],
    seeds: Sequence[int],
    device: Any = "cpu",
    dtype: Any = None,
) -> TrainBatch:
    """Draw each sample's latent, noise and timestep from its own seeded generator."""
    import torch

    x0s, noises, ts = [], [], []
    for dist, seed in zip(latent_dists, seeds):
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        x0 = spec.sample_latents(pipe, dist.float()[None], generator=g)[0]
        noises.append(torch.randn(x0.shape, generator=g))
        ts.append(spec.sample_timestep(pipe, g))
        x0s.append(x0)
    dtype = dtype or torch.float32
    return TrainBatch(
        x0=torch.stack(x0s).to(device=device, dtype=dtype),
        text_embeds=torch.stack([e.float() for e in text_embeds]).to(device=device, dtype=dtype),
        rewards=torch.tensor([float(r) for r in rewards], dtype=torch.float32, device=device),
        noise=torch.stack(noises).to(device=device, dtype=dtype),
        timesteps=torch.stack(ts).to(device),
    )


def per_sample_loss(spec: T2VModelSpec, pipe: Any, denoiser: Any, batch: TrainBatch) -> Any:
    """``lambda(t) * mean((prediction - target)^2)`` per sample, before the reward weight: ``[B]``."""
    noisy = spec.add_noise(pipe, batch.x0, batch.noise, batch.timesteps)
    out = spec.forward(pipe, denoiser, noisy, batch.text_embeds, batch.timesteps)
    prediction, target = spec.prediction_and_target(pipe, out, noisy, batch.x0, batch.noise, batch.timesteps)
    err = (prediction.float() - target.float()) ** 2
    return spec.loss_weights(pipe, batch.timesteps) * err.reshape(err.shape[0], -1).mean(dim=1)


def reward_weighted_loss(per_sample: Any, rewards: Any) -> Any:
    """``sum_i w_i * loss_i / b`` over this worker's ``b`` samples. Every worker holds the same number of
    samples and DDP averages gradients, so the step follows the mean over the global batch."""
    return (rewards.to(per_sample.dtype) * per_sample).sum() / float(per_sample.shape[0])


__all__ = ["TrainBatch", "make_batch", "per_sample_loss", "reward_weighted_loss", "sample_seed"]
