"""``lift plan``: every shipped config plans; impossible arithmetic fails naming the keys and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from lift_core.config import load_config
from lift_core.plan import PlanError, plan

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_plans_through_the_cli(path, lift_cli):
    code, out, err = lift_cli("plan", "--config", str(path))
    assert code == 0, err
    assert "train_critic" in out and "align" in out and "GPUs:" in out


def test_the_paper_profile_reaches_lifts_global_batches():
    rows = {r.stage: r for r in plan(load_config(REPO / "configs" / "lift-cogvideox-2b.yaml"))}
    critic, align = rows["train_critic"], rows["align"]
    assert critic.world_size * critic.per_device_batch * critic.grad_accum_steps == critic.global_batch == 128
    assert align.world_size * align.per_device_batch * align.grad_accum_steps == align.global_batch == 64
    assert align.gpus == critic.gpus == 8


def test_demo_epochs_come_from_the_synthetic_data_size():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    critic = {r.stage: r for r in plan(cfg)}["train_critic"]
    examples = int(cfg.data.synthetic.n * (1 - cfg.data.split.val - cfg.data.split.test)) * 3
    assert critic.epochs == pytest.approx(cfg.critic.train.max_steps * cfg.critic.train.batch_size / examples, abs=0.01)


def test_impossible_batch_arithmetic_names_the_keys_and_the_fix(lift_cli):
    cfg = load_config(REPO / "configs" / "lift-cogvideox-2b.yaml", ["align.train.batch_size=72"])
    with pytest.raises(PlanError, match=r"align\.train\.batch_size=72 .*align\.train\.num_workers=8 x "
                                        r"align\.train\.grad_accum_steps=4.*grad_accum_steps to one of"):
        plan(cfg)
    code, _, err = lift_cli("plan", "--config", str(REPO / "configs" / "lift-cogvideox-2b.yaml"),
                            "critic.train.batch_size=100")
    errors = [line for line in err.splitlines() if line.startswith("lift: error:")]
    assert code == 2 and len(errors) == 1 and "critic.train.batch_size=100" in errors[0]


def test_more_gpus_than_the_concurrency_limit_is_refused():
    cfg = load_config(REPO / "configs" / "lift-cogvideox-2b.yaml", ["prefect.gpu_slots=4"])
    with pytest.raises(PlanError, match="needs 8 GPUs but the GPU concurrency limit has 4"):
        plan(cfg)
