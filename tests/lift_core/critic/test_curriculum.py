"""The critic's training order: curriculum phases, resume-safety, and how the config validates them."""

from __future__ import annotations

from collections import Counter

import pytest

from lift_core.config import ConfigError, CurriculumPhase, load_config
from lift_core.critic.train import CurriculumOrder
from lift_core.train import DataOrder

TRAIN = [{"video_id": f"v{i}", "dimension": dim} for i in range(6) for dim in ("semantic", "fidelity", "motion")]
BATCH = 4


def batches(order: CurriculumOrder, steps: range) -> list[list[int]]:
    return [[order(step, slot, BATCH) for slot in range(BATCH)] for step in steps]


def test_phases_draw_only_their_dimensions_then_everything_trains():
    order = CurriculumOrder(TRAIN, [CurriculumPhase(steps=3, dimensions=["semantic"]),
                                    CurriculumPhase(steps=2, dimensions=["fidelity", "motion"])], seed=0)
    dims = [[TRAIN[i]["dimension"] for i in batch] for batch in batches(order, range(20))]
    assert all(set(b) == {"semantic"} for b in dims[:3])
    assert all(set(b) <= {"fidelity", "motion"} for b in dims[3:5])
    # 12 semantic draws over 6 semantic examples: each exactly twice (whole epochs, no repeats within one).
    assert set(Counter(i for batch in batches(order, range(3)) for i in batch).values()) == {2}
    after = Counter(d for b in dims[5:] for d in b)
    assert set(after) == {"semantic", "fidelity", "motion"}


def test_without_a_curriculum_the_order_is_the_plain_data_order():
    order, plain = CurriculumOrder(TRAIN, [], seed=3), DataOrder(len(TRAIN), 3)
    assert batches(order, range(10)) == [[plain(step * BATCH + slot) for slot in range(BATCH)] for step in range(10)]


def test_an_example_depends_only_on_step_and_slot():
    phases = [CurriculumPhase(steps=4, dimensions=["semantic"])]
    full = batches(CurriculumOrder(TRAIN, phases, seed=1), range(12))
    resumed = batches(CurriculumOrder(TRAIN, phases, seed=1), range(7, 12))  # a fresh object, mid-run
    assert resumed == full[7:]


def test_a_phase_without_examples_is_an_error():
    only_semantic = [e for e in TRAIN if e["dimension"] == "semantic"]
    with pytest.raises(ValueError, match="phase 1: no training examples of \\['motion'\\]"):
        CurriculumOrder(only_semantic, [CurriculumPhase(steps=2, dimensions=["motion"])], seed=0)


@pytest.mark.parametrize("overrides, message", [
    (["critic.curriculum=[{steps: 5, dimensions: [sematic]}]"], "unknown dimension"),
    (["critic.curriculum=[{steps: 0, dimensions: [semantic]}]"], "greater than or equal to 1"),
    (["critic.train.max_steps=100", "critic.curriculum=[{steps: 100, dimensions: [semantic]}]"],
     "must end before train.max_steps"),
])
def test_config_rejects_bad_curricula(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_the_training_loop_follows_the_curriculum(rated_data, make_train_config, tmp_path, monkeypatch):
    from lift_core.critic import train_stage as train_mod
    from lift_core.critic.train import CriticLoraRecipe
    from lift_core.train import run_worker

    cfg = make_train_config(tmp_path, curriculum=[{"steps": 2, "dimensions": ["motion"]}],
                            train={"num_workers": 1, "batch_size": 4, "max_steps": 4, "lr": 0.005,
                                   "warmup_steps": 1, "checkpoint_every": 10, "seed": 0})
    plan = train_mod.plan_training(cfg, rated_data["manifest"], rated_data["frames"])
    trained_dims: list[list[str]] = []
    from lift_core.critic import backbone  # run_worker imports encode_batch from here when it runs

    real_encode = backbone.encode_batch

    def recording_encode(loaded, videos, captions, dimensions, answers=None):
        if answers is not None:  # training batches only, not the held-out predictions
            trained_dims.append(list(dimensions))
        return real_encode(loaded, videos, captions, dimensions, answers)

    monkeypatch.setattr(backbone, "encode_batch", recording_encode)
    run_worker(CriticLoraRecipe(),
               dict(plan.config, out_uri=str(tmp_path / "out"), adapter_uri=str(tmp_path / "out" / "adapter"),
                    predictions_uri=str(tmp_path / "out" / "preds.parquet")))
    assert len(trained_dims) == 4
    assert all(set(dims) == {"motion"} for dims in trained_dims[:2])
    assert len({d for dims in trained_dims[2:] for d in dims}) > 1
