"""LiFT's reward-weighted loss: the v -> x0 conversion, the 1/(1-alphabar_t) weights, and one step that
moves the model toward the rewarded sample and not toward the unrewarded one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lift_core.config import AlignConfig
from lift_core.t2v.align import add_trainable, train_step
from lift_core.train import DataOrder
from lift_core.t2v.loss import make_batch, per_sample_loss, reward_weighted_loss, sample_seed
from lift_core.t2v.spec import frames_to_pixels, get_spec


@pytest.fixture(scope="module")
def spec():
    return get_spec("cogvideox")


def _pipe(spec, tiny_t2v):
    torch.manual_seed(0)
    return spec.load_pipeline(tiny_t2v)


def _videos() -> list[np.ndarray]:
    """Two different clips: a bright square moving down; a dark frame with a flickering stripe."""
    a = np.full((9, 32, 32, 3), 15, np.uint8)
    for t in range(9):
        a[t, 2 * t : 2 * t + 10, 8:18] = (230, 40, 40)
    b = np.full((9, 32, 32, 3), 200, np.uint8)
    b[::2, :, 12:20] = (20, 20, 220)
    return [a, b]


def test_x0_prediction_and_weights(spec, tiny_t2v):
    pipe = _pipe(spec, tiny_t2v)
    sched = pipe.scheduler
    x0 = torch.randn(3, 3, 4, 4, 4)
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 500, 999])
    a = sched.alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)
    noisy = spec.add_noise(pipe, x0, eps, t)
    assert torch.allclose(noisy, a.sqrt() * x0 + (1 - a).sqrt() * eps, atol=1e-5)
    v = a.sqrt() * eps - (1 - a).sqrt() * x0  # the true velocity
    prediction, target = spec.prediction_and_target(pipe, v, noisy, x0, eps, t)
    assert torch.allclose(prediction, x0, atol=1e-4) and target is x0
    w = spec.loss_weights(pipe, t)
    assert torch.allclose(w, 1.0 / (1.0 - sched.alphas_cumprod[t].float()))
    assert w[0] > 100 and w[2] == pytest.approx(1.0, abs=1e-3)  # huge near t=0 (hence gradient clipping)


def test_reward_weighted_loss_is_the_mean_of_weighted_losses():
    per = torch.tensor([2.0, 4.0, 6.0])
    assert float(reward_weighted_loss(per, torch.tensor([1.0, 0.5, 0.0]))) == pytest.approx((2 + 2 + 0) / 3)


def _fixed_batch(spec, pipe, rewards):
    videos = _videos()
    dists = [spec.encode_video_dist(pipe, frames_to_pixels(v))[0] for v in videos]
    embeds = list(spec.encode_text(pipe, ["one red square moving down", "a blue stripe flickering"], 32))
    # Middle timesteps for both samples, so the two losses are on the same scale.
    for attempt in range(200):
        batch = make_batch(spec, pipe, dists, embeds, rewards, [sample_seed(attempt, 0), sample_seed(attempt, 1)])
        if all(200 <= int(t) <= 800 for t in batch.timesteps):
            return batch
    raise AssertionError("no draw with middle timesteps")


def _one_step_change(spec, tiny_t2v, rewards) -> torch.Tensor:
    """Relative change of each sample's loss after one reward-weighted LoRA step (same noise and timesteps)."""
    pipe = _pipe(spec, tiny_t2v)
    model = spec.denoiser(pipe)
    params = add_trainable(spec, model, "lora", AlignConfig().lora)
    batch = _fixed_batch(spec, pipe, list(rewards))

    # The zero-reward sample contributes no gradient at all.
    hi = 0 if rewards[0] > rewards[1] else 1
    per = per_sample_loss(spec, pipe, model, batch)
    grads_all = torch.autograd.grad(reward_weighted_loss(per, batch.rewards), params, retain_graph=True, allow_unused=True)
    grads_hi = torch.autograd.grad(per[hi] / 2, params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads_all)
    for g_all, g_hi in zip(grads_all, grads_hi):
        if g_all is not None:
            assert torch.allclose(g_all, g_hi, atol=1e-7)

    with torch.no_grad():
        before = per_sample_loss(spec, pipe, model, batch)
    optimizer = torch.optim.AdamW(params, lr=5e-3, weight_decay=0.0)
    train_step(spec, pipe, model, params, optimizer, batch, grad_clip=1.0)
    with torch.no_grad():
        after = per_sample_loss(spec, pipe, model, batch)
    return (after - before) / before  # relative, so the two samples compare


def test_one_step_moves_toward_the_rewarded_sample_more(spec, tiny_t2v):
    a_rewarded = _one_step_change(spec, tiny_t2v, (1.0, 0.0))
    b_rewarded = _one_step_change(spec, tiny_t2v, (0.0, 1.0))
    # Within a step: the rewarded sample's loss falls, and by more than the other's.
    assert a_rewarded[0] < 0 and a_rewarded[0] < a_rewarded[1], a_rewarded.tolist()
    assert b_rewarded[1] < 0 and b_rewarded[1] < b_rewarded[0], b_rewarded.tolist()
    # Across the two steps: each sample gains more when it is the rewarded one.
    assert a_rewarded[0] < b_rewarded[0] and b_rewarded[1] < a_rewarded[1]


def test_full_fine_tuning_trains_every_weight(spec, tiny_t2v):
    pipe = _pipe(spec, tiny_t2v)
    model = spec.denoiser(pipe)
    params = add_trainable(spec, model, "full", AlignConfig().lora)
    assert len(params) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="lora or full"):
        add_trainable(spec, model, "half", AlignConfig().lora)


def test_full_fine_tuning_of_named_modules_only(spec, tiny_t2v):
    """LiFT's train.py trains ``transformer_blocks`` only: patch_embed, proj_out and the rest stay frozen."""
    pipe = _pipe(spec, tiny_t2v)
    model = spec.denoiser(pipe)
    params = add_trainable(spec, model, "full", AlignConfig().lora, ["transformer_blocks"])
    blocks = {id(p) for p in model.transformer_blocks.parameters()}
    assert {id(p) for p in params} == blocks and len(params) < len(list(model.parameters()))
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("transformer_blocks"))
    with pytest.raises(ValueError, match="no submodule \\['blocks'\\].*transformer_blocks"):
        add_trainable(spec, spec.denoiser(_pipe(spec, tiny_t2v)), "full", AlignConfig().lora, ["blocks"])


def test_data_order_is_a_permutation_per_epoch_and_seeded():
    order = DataOrder(5, seed=3)
    epoch0 = [order(p) for p in range(5)]
    epoch1 = [order(p) for p in range(5, 10)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(5))
    assert [DataOrder(5, seed=3)(p) for p in range(10)] == epoch0 + epoch1
    assert sample_seed(0, 7) == sample_seed(0, 7) != sample_seed(0, 8)


def test_vae_tiling_and_slicing_come_from_the_config(spec, tiny_t2v, t2v_cfg, tmp_path):
    from dataclasses import asdict

    from lift_core.t2v.cache import CacheEncoder, namespaces

    cfg = t2v_cfg.model_copy(deep=True)
    cfg.t2v.vae_tiling = cfg.t2v.vae_slicing = True
    encoder = CacheEncoder(tiny_t2v, cfg.t2v.model_dump(mode="json"), asdict(namespaces(cfg, tiny_t2v)))
    assert encoder.pipe.vae.use_tiling and encoder.pipe.vae.use_slicing
    plain = CacheEncoder(tiny_t2v, t2v_cfg.t2v.model_dump(mode="json"), asdict(namespaces(t2v_cfg, tiny_t2v)))
    assert not plain.pipe.vae.use_tiling and not plain.pipe.vae.use_slicing
