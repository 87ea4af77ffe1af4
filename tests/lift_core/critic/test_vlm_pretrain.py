"""The demo VLM's pre-training: generic video-text supervision of the synthetic world, never LiFT-HRA's
questions or labels, through the decode path the critic later sees; one training loop; resumable data."""

from __future__ import annotations

import numpy as np
import pytest

from lift_core.config import LABELS, config_from_dict
from lift_core.domain import QUESTIONS

SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "vision_depth": 1,
         "vision_embed_dim": 32, "vision_num_heads": 2}


def _cfg(tmp_path, **pretrain):
    return config_from_dict({
        "run_root": str(tmp_path),
        "data": {"synthetic": {"height": 32, "width": 32, "num_frames": 9, "fps": 8}},
        "critic": {"build_tiny": SMALL, "pretrain": pretrain},
    })


def test_examples_are_generic_true_to_the_clip_and_a_function_of_position(tmp_path):
    from lift_core.critic.pretrain import TASKS, make_examples

    cfg = _cfg(tmp_path)
    examples = make_examples(cfg, range(64), seed=0)
    assert {e.task for e in examples} == set(TASKS)
    for e in examples:
        assert e.frames.shape == (8, 56, 56, 3) and e.frames.dtype == np.uint8  # the decode stage's output
        # Never LiFT-HRA's questions, never its labels as answers.
        assert not any(q in e.prompt for q in QUESTIONS.values())
        assert e.answer.split(".")[0] not in LABELS
    again = make_examples(cfg, [5, 9], seed=0)
    assert (again[0].frames == examples[5].frames).all() and again[1].answer == examples[9].answer
    matches = [e for e in examples if e.task == "match"]
    assert {e.answer == "Yes." for e in matches} == {True, False}
    for e in matches:  # a "No" says what the clip shows instead, and that differs from the text asked about
        if e.answer != "Yes.":
            asked = e.prompt.split(": ", 1)[1].rstrip("?")
            assert e.answer.startswith("No. It shows ") and asked not in e.answer


def test_task_weights_pick_the_tasks(tmp_path):
    from lift_core.critic.pretrain import make_examples

    cfg = _cfg(tmp_path, task_weights={"describe": 1.0, "appearance": 0.0, "motion": 0.0, "match": 0.0})
    assert {e.task for e in make_examples(cfg, range(12), seed=1)} == {"describe"}
    none = _cfg(tmp_path, task_weights={"describe": 0.0})
    with pytest.raises(ValueError, match="no task"):
        make_examples(none, [0], seed=0)


def test_pretraining_moves_every_weight_and_records_figures(tmp_path, ray_address):
    from safetensors.torch import load_file

    from lift_core.critic.builder import build_tiny_critic, built_record, ensure_critic_base

    cfg = config_from_dict({
        "run_root": str(tmp_path), "ray": {"address": ray_address},
        "data": {"synthetic": {"height": 32, "width": 32, "num_frames": 9, "fps": 8}},
        "critic": {"model": str(tmp_path / "pre"), "build_tiny": SMALL,
                   "pretrain": {"train": {"max_steps": 4, "batch_size": 4, "warmup_steps": 1, "lr": 0.01},
                                "eval_clips": 8}},
    })
    model = ensure_critic_base(cfg)
    plain = build_tiny_critic(str(tmp_path / "plain"), cfg.critic.build_tiny)
    a, b = load_file(f"{plain}/model.safetensors"), load_file(f"{model}/model.safetensors")
    assert a.keys() == b.keys()
    vision = [k for k in a if "visual" in k]
    language = [k for k in a if "language_model" in k or "lm_head" in k or "embed_tokens" in k]
    assert vision and language
    assert any(not (a[k] == b[k]).all() for k in vision) and any(not (a[k] == b[k]).all() for k in language)
    record = built_record(model)
    assert record["build"]["pretrain"]["train"]["max_steps"] == 4
    acc = record["pretrain_figures"]["held_apart_accuracy"]
    assert set(acc) >= {"describe", "appearance", "motion", "match", "describe_colour"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    # Built once: the same config finds it, another pretrain value rebuilds it.
    assert ensure_critic_base(cfg) == model
    changed = cfg.model_copy(deep=True)
    changed.critic.pretrain.train.lr = 0.02
    ensure_critic_base(changed)
    assert built_record(model)["build"]["pretrain"]["train"]["lr"] == 0.02
