"""The training loop on a small regression recipe: accumulation and resume are exact, schedules, mixed
precision keeps fp32 weights, callbacks see every step, and gradient checkpointing goes through the model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lift_core import storage
from lift_core.train import Callback, latest_checkpoint, run_worker
from lift_core.train.loop import enable_gradient_checkpointing, log_schema, root_cause
from lift_core.train.schedules import delayed, lr_lambda

def test_gradient_accumulation_gives_the_same_steps(tmp_path, Regression, loop_config, train_log):
    run_worker(Regression(), loop_config(tmp_path / "a"))
    run_worker(Regression(), loop_config(tmp_path / "b", grad_accum_steps=2))
    run_worker(Regression(), loop_config(tmp_path / "c", grad_accum_steps=4))
    ref = [r["loss"] for r in train_log(tmp_path / "a")]
    assert len(set(ref)) == len(ref)  # the weights move: each step sees another loss
    for other in ("b", "c"):
        np.testing.assert_allclose([r["loss"] for r in train_log(tmp_path / other)], ref, rtol=1e-5)
    with pytest.raises(ValueError, match="grad_accum_steps=3"):
        run_worker(Regression(), loop_config(tmp_path / "d", grad_accum_steps=3))


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_start(self, ctx, step):
        if step == self.step:
            raise KeyboardInterrupt  # like a killed worker: nothing after this point runs


def test_resume_from_a_checkpoint_is_exact(tmp_path, Regression, loop_config, train_log):
    run_worker(Regression(), loop_config(tmp_path / "ref"))
    with pytest.raises(KeyboardInterrupt):
        run_worker(Regression(), loop_config(tmp_path / "run", callbacks=[StopAt(4)]))
    assert latest_checkpoint(str(tmp_path / "run"))[0] == 2
    run_worker(Regression(), loop_config(tmp_path / "run"))
    ref, log = train_log(tmp_path / "ref"), train_log(tmp_path / "run")
    assert [r["step"] for r in log] == list(range(1, 7))
    np.testing.assert_allclose([r["loss"] for r in log], [r["loss"] for r in ref], rtol=1e-6)
    assert storage.read_json(str(tmp_path / "run" / "train_result.json")) == {"step": 6, "resumed_from_step": 2}
    assert storage.read_json(str(tmp_path / "run" / "final.json")) == {"rows": 6}


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_start(self, ctx, start_step):
        self.events.append(("start", start_step))

    def on_step_end(self, ctx, row):
        self.events.append(("step", row["step"]))

    def on_checkpoint(self, ctx, step, uri):
        self.events.append(("checkpoint", step, uri is not None))

    def on_train_end(self, ctx):
        self.events.append(("end",))


def test_callbacks_see_every_step_and_checkpoint(tmp_path, Regression, loop_config):
    rec = Recorder()
    run_worker(Regression(), loop_config(tmp_path, callbacks=[rec], max_steps=3))
    assert rec.events == [("start", 0), ("step", 1), ("step", 2), ("checkpoint", 2, True), ("step", 3),
                          ("checkpoint", 3, True), ("end",)]
    schema = log_schema(Regression())
    assert schema.names == ["step", "loss", "lr", "grad_norm", "samples_seen", "world_size", "step_time_s"]


def test_schedules():
    cosine = lr_lambda(2, 10, "cosine")
    assert [cosine(s) for s in (0, 1)] == [pytest.approx(1 / 3), pytest.approx(2 / 3)]
    assert cosine(2) == pytest.approx(1.0) and cosine(6) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
    constant = lr_lambda(2, 10, "constant")
    assert constant(1) == pytest.approx(2 / 3) and constant(9) == 1.0
    late = delayed(4, 0, 10, "cosine")
    assert late(3) == 0.0 and late(4) == pytest.approx(1.0) and late(7) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    with pytest.raises(ValueError, match="constant or cosine"):
        lr_lambda(0, 10, "linear")


def test_adamw_settings_reach_the_optimizer(tmp_path, Regression, loop_config, train_log):
    seen = {}

    class Peek(Callback):
        def on_train_start(self, ctx, start_step):
            pass

    recipe = Regression()
    build = recipe.build

    def build_and_keep(ctx):
        model = build(ctx)
        seen["params"] = model.param_groups[0]["params"]
        return model

    recipe.build = build_and_keep
    run_worker(recipe, loop_config(tmp_path, max_steps=2, betas=(0.8, 0.9), weight_decay=0.1, warmup_steps=1,
                               lr_schedule="cosine", grad_clip=0.5, callbacks=[Peek()]))
    log = train_log(tmp_path)
    assert log[0]["lr"] == pytest.approx(0.05 * 0.5)  # warmup: (0 + 1) / (1 + 1)
    from lift_core.train.checkpoints import read_newest_intact

    opt = read_newest_intact(str(tmp_path)).optimizer
    assert opt["param_groups"][0]["betas"] == (0.8, 0.9) and opt["param_groups"][0]["weight_decay"] == 0.1


def test_mixed_precision_keeps_trainable_weights_in_fp32(tmp_path, Regression, loop_config, train_log):
    recipe = Regression(dtype=torch.bfloat16)
    kept = {}
    build = recipe.build

    def build_and_keep(ctx):
        model = build(ctx)
        kept["module"] = model.module
        return model

    recipe.build = build_and_keep
    run_worker(recipe, loop_config(tmp_path, max_steps=2, mixed_precision="bf16"))
    assert all(p.dtype == torch.float32 for p in kept["module"].parameters())
    assert all(np.isfinite(r["loss"]) for r in train_log(tmp_path))


def test_gradient_checkpointing_goes_through_the_model_api():
    calls = []

    class HFLike(torch.nn.Linear):
        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
            calls.append(("transformers", gradient_checkpointing_kwargs))

    class DiffusersLike(torch.nn.Linear):
        def enable_gradient_checkpointing(self):
            calls.append(("diffusers",))

    enable_gradient_checkpointing(HFLike(1, 1))
    enable_gradient_checkpointing(DiffusersLike(1, 1))
    assert calls == [("transformers", {"use_reentrant": False}), ("diffusers",)]
    with pytest.raises(ValueError, match="no gradient checkpointing API"):
        enable_gradient_checkpointing(torch.nn.Linear(1, 1))


def test_root_cause_unwraps_chains():
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as inner:
            raise RuntimeError("worker group failed") from inner
    except RuntimeError as outer:
        assert isinstance(root_cause(outer), OSError)
