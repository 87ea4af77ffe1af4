"""Diffusion-DPO: pairs from videos of one prompt, the loss's sign, a frozen reference, and a run through
the same loop, cache and checkpoints as LiFT's objective."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lift_core import storage
from lift_core.config import AlignConfig, load_config
from lift_core.t2v.align import add_trainable
from lift_core.t2v.align_stage import latest_checkpoint, run_align
from lift_core.t2v.dpo import DiffusionDpoRecipe, adapters_disabled, preference_pairs
from lift_core.t2v.loss import make_batch, per_sample_loss, sample_seed
from lift_core.t2v.spec import frames_to_pixels, get_spec
from lift_core.train import TrainModel


def _sample(i, caption, reward, source="generated"):
    return {"video_id": f"{i:016x}", "caption": caption, "reward": reward, "source": source}


def test_pairs_from_one_prompt_with_the_higher_reward_winning():
    samples = [_sample(0, "a", 0.9), _sample(1, "a", 0.2), _sample(2, "a", 0.85),  # 3 videos of one prompt
               _sample(3, "b", 0.5),  # a prompt with a single video
               _sample(4, "c", 0.4), _sample(5, "c", 0.4),  # all-equal rewards
               _sample(6, "a", 0.1, source="hd-vila")]  # real videos are not generations of the prompt
    pairs, counts = preference_pairs(samples, min_gap=0.1)
    assert sorted((p["winner"], p["loser"]) for p in pairs) == [(0, 1), (2, 1)]  # 0 vs 2: gap 0.05 < 0.1
    assert counts == {"pairs": 2, "pairs_below_min_gap": 2, "prompts_with_one_video": 1}
    assert preference_pairs([_sample(0, "b", 0.5)], 0.0) == ([], {"pairs": 0, "pairs_below_min_gap": 0,
                                                                    "prompts_with_one_video": 1})
    assert preference_pairs([_sample(0, "c", 0.4), _sample(1, "c", 0.4)], 0.0)[0] == []


def _pair_batch(spec, pipe, seed=3):
    """A winner (a red square moving down) and a loser (a flickering stripe) with the same noise and t."""
    a = np.full((9, 32, 32, 3), 15, np.uint8)
    for t in range(9):
        a[t, 2 * t: 2 * t + 10, 8:18] = (230, 40, 40)
    b = np.full((9, 32, 32, 3), 200, np.uint8)
    b[::2, :, 12:20] = (20, 20, 220)
    dists = [spec.encode_video_dist(pipe, frames_to_pixels(v))[0] for v in (a, b)]
    text = spec.encode_text(pipe, ["one red square moving down"], 32)[0]
    for attempt in range(200):  # a middle timestep, so the step is on a sensible scale
        s = sample_seed(seed + attempt, 0)
        batch = make_batch(spec, pipe, dists, [text, text], [1.0, 0.0], [s, s])
        if 200 <= int(batch.timesteps[0]) <= 800:
            return batch
    raise AssertionError("no middle timestep drawn")


def test_one_step_raises_the_winner_margin_and_the_reference_stays_frozen(tiny_t2v):
    spec = get_spec("cogvideox")
    torch.manual_seed(0)
    pipe = spec.load_pipeline(tiny_t2v)
    inner = spec.denoiser(pipe)
    base_weights = {k: v.clone() for k, v in inner.state_dict().items()}
    params = add_trainable(spec, inner, "lora", AlignConfig().lora)
    batch = _pair_batch(spec, pipe)
    assert torch.equal(batch.noise[0], batch.noise[1]) and batch.timesteps[0] == batch.timesteps[1]

    cfg = load_config(None, ["align.dpo.beta=5000"])
    ctx = SimpleNamespace(cfg=cfg, device=torch.device("cpu"))
    model = TrainModel(module=inner, param_groups=[{"params": params}], trainable_state=dict,
                       load_trainable_state=lambda s: None, handles={"spec": spec, "pipe": pipe})
    recipe = DiffusionDpoRecipe()
    loss, stats = recipe.loss(ctx, model, inner, batch)
    # A fresh LoRA (B = 0) is the reference itself: margin 0, loss log 2.
    assert float(stats["margin"].detach()) == pytest.approx(0.0, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(np.log(2), rel=1e-4)
    with torch.no_grad(), adapters_disabled(inner) as base:
        ref_before = per_sample_loss(spec, pipe, base, batch)

    optimizer = torch.optim.AdamW(params, lr=1e-3)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    _, after = recipe.loss(ctx, model, inner, batch)
    assert float(after["margin"]) > 0 and int(after["correct"]) == 1  # the winner gained on the loser
    with torch.no_grad(), adapters_disabled(inner) as base:
        assert torch.allclose(per_sample_loss(spec, pipe, base, batch), ref_before)  # the reference did not move
    lora_free = {k.replace(".base_layer", ""): v for k, v in inner.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(lora_free[k], v) for k, v in base_weights.items())
    assert not any(p.requires_grad for n, p in inner.named_parameters() if "lora_" not in n)


def test_dpo_needs_lora(tmp_path):
    cfg = load_config(None, ["align.objective=dpo", "align.mode=full"])
    ctx = SimpleNamespace(cfg=cfg)
    with pytest.raises(ValueError, match="needs align.mode=lora"):
        DiffusionDpoRecipe().build(ctx)


@pytest.mark.slow
def test_dpo_runs_through_the_align_stage_and_resumes(ray_session, make_t2v_cfg, tmp_path, scores_uri, generated,
                                                      real_manifest, kill_worker_at_step):
    cfg = make_t2v_cfg(tmp_path, "align.objective=dpo", "align.dpo.min_gap=0.05", "align.dpo.beta=500",
                       f"t2v.model={generated.metrics['model']}")
    manifests = [generated.outputs["generated"], real_manifest]
    with pytest.raises(RuntimeError, match="rerun to resume from the last checkpoint \\(step 2"):
        run_align(cfg, scores_uri, manifests, callbacks=[kill_worker_at_step(3)])
    res = run_align(cfg, scores_uri, manifests)
    assert res.counts["resumed_from_step"] == 2 and latest_checkpoint(res.out_uri)[0] == 4
    assert res.counts["pairs"] >= 1 and "pairs_below_min_gap" in res.counts
    assert res.metrics["objective"] == "dpo"
    log = storage.read_table(res.outputs["train_log"]).to_pylist()
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and 0 <= r["pair_accuracy"] <= 1 for r in log)
    assert (tmp_path / "align").exists() and res.outputs["lora"]
