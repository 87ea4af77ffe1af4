"""Every shipped config loads, splits its global batches evenly, and the paper-scale ones are LiFT's recipe.

The values LiFT's released code uses (github.com/CodeGoat24/LiFT; the config cites each file) are
checked here so an edit that drifts from them fails loudly rather than silently changing the recipe.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lift_core.config import load_config
from lift_core.plan import format_plan, plan
from lift_core.train import LoopSettings

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
PAPER_SCALE = ["lift-cogvideox-2b.yaml", "lift-cogvideox-2b-1gpu.yaml", "lift-cogvideox-2b-dpo.yaml"]
QWEN_LLM_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def _cfg(name: str):
    return load_config(next(p for p in CONFIGS if p.name == name))


def test_the_paper_scale_profiles_are_shipped():
    assert {p.name for p in CONFIGS} >= set(PAPER_SCALE)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_its_batches_split_evenly(path):
    cfg = load_config(path)
    for section_name in ("critic", "align"):
        settings = LoopSettings.for_stage(getattr(cfg, section_name))
        micro = settings.micro_batch(settings.num_workers, f"{section_name}.train")  # raises on an uneven split
        assert micro * settings.num_workers * settings.grad_accum_steps == settings.batch_size
        assert settings.warmup_steps < settings.max_steps


@pytest.mark.parametrize("name", PAPER_SCALE)
def test_paper_scale_profiles_turn_the_memory_features_on(name):
    cfg = _cfg(name)
    for train in (cfg.critic.train, cfg.align.train):
        assert train.use_gpu and train.gradient_checkpointing and train.mixed_precision == "bf16"
    assert cfg.t2v.dtype == "bfloat16"
    assert cfg.align.cache_num_gpus_per_actor > 0  # VAE encoding of 49x480x720 clips on GPUs, not CPUs
    assert cfg.score.num_gpus_per_actor > 0 and cfg.generate.num_gpus_per_actor > 0


@pytest.mark.parametrize("name", PAPER_SCALE)
def test_evaluation_prompts_are_held_out_from_generation(name):
    cfg = _cfg(name)
    assert cfg.evaluate.split not in ("train", None)  # generation for alignment uses the train split
    assert cfg.data.split.test > 0


@pytest.mark.parametrize("name", PAPER_SCALE)
def test_lift_recipe_values_shared_by_both_profiles(name):
    cfg = _cfg(name)
    # CogVideo/process_reward_score.py: Good 0.9, Normal 0.2, Bad 0.05, the alignment weight.
    assert cfg.score.lift_values == {"Good": 0.9, "Normal": 0.2, "Bad": 0.05}
    assert cfg.align.reward_column == "reward_lift" and cfg.align.weighting == "reward"
    # LiFT-Critic/train/train_critic_13b.sh: LoRA r128 alpha 256 (dropout 0.05) on every LLM linear,
    # nothing else trained; lr 1e-5 cosine, no weight decay; global batch 128.
    lora, train = cfg.critic.lora, cfg.critic.train
    assert (lora.r, lora.alpha, lora.dropout) == (128, 256, 0.05)
    assert set(lora.target_modules) == QWEN_LLM_LINEARS and not lora.modules_to_save
    assert not cfg.critic.train_label_tokens  # a 13B VILA already answers with the label words
    assert (train.lr, train.lr_schedule, train.weight_decay, train.batch_size) == (1e-5, "cosine", 0.0, 128)
    # CogVideo/finetune/train.sh (+ train.py defaults): AdamW (0.9, 0.95), weight decay 1e-4, cosine, clip 1.0.
    a = cfg.align.train
    assert (tuple(a.betas), a.weight_decay, a.lr_schedule, a.grad_clip) == ((0.9, 0.95), 1e-4, "cosine", 1.0)
    assert (cfg.t2v.model, cfg.t2v.height, cfg.t2v.width, cfg.t2v.num_frames, cfg.t2v.fps) == (
        "THUDM/CogVideoX-2b", 480, 720, 49, 8)
    assert cfg.decode.frames == 8


def test_lift_cogvideox_2b_is_lifts_alignment():
    cfg = _cfg("lift-cogvideox-2b.yaml")
    a = cfg.align
    # CogVideo/finetune/train.sh: full fine-tuning at lr 1e-5 after 200 warmup steps, global batch
    # 64 = 8 per GPU x 8 GPUs, seed 42.
    assert a.mode == "full" and a.train.lr == 1e-5 and a.train.warmup_steps == 200
    assert (a.train.batch_size, a.train.num_workers, a.train.seed) == (64, 8, 42)
    assert (cfg.critic.train.num_workers, cfg.critic.train.max_steps) == (8, 3325)  # 25 epochs, see the config


def test_lift_cogvideox_2b_dpo_is_lifts_recipe_but_for_the_objective():
    """The DPO profile differs from LiFT's only in ``align`` (and its name and run root), so the two compare
    objectives on the same data, critic, rewards, generations and evaluation."""
    lift, dpo = _cfg("lift-cogvideox-2b.yaml"), _cfg("lift-cogvideox-2b-dpo.yaml")
    assert dpo.run_root != lift.run_root  # its own run root; paths under it aside, the rest is LiFT's
    on_lifts_root = load_config(CONFIGS[0].parent / "lift-cogvideox-2b-dpo.yaml", [f"run_root={lift.run_root}"])
    same = lambda cfg: cfg.model_dump(mode="json", exclude={"name", "align"})  # noqa: E731
    assert same(on_lifts_root) == same(lift)
    a = dpo.align
    # Diffusion-DPO train.py --beta_dpo default and launchers/sd15.sh; VideoDPO configs/vc2_dpo/config.yaml.
    assert a.objective == "dpo" and a.dpo.beta == 5000 and a.dpo.min_gap == 0.1
    assert a.mode == "lora" and a.lora.r == 128  # the reference is the adapter switched off
    assert not a.use_real  # pairs are generated videos only
    assert a.reward_column == lift.align.reward_column == "reward_lift"
    assert (a.train.batch_size, a.train.num_workers, a.train.seed, a.train.warmup_steps) == (64, 8, 42, 200)


def test_lift_plan_shows_the_dpo_profiles_objective():
    cfg = _cfg("lift-cogvideox-2b-dpo.yaml")
    rows = {r.stage: r for r in plan(cfg)}
    assert rows["align"].note == "objective dpo, mode lora"
    assert rows["align"].row()["per_device_batch"] == 1 and rows["align"].row()["global_batch"] == 64
    assert "objective dpo" in format_plan(list(rows.values()), cfg)
