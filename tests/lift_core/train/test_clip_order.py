"""Gradient clipping sums the parameter norms in the model's order, whatever the recipe's AdamW groups.

The critic recipe groups LoRA matrices before the fully trained ``modules_to_save``; when the loop
clipped in that group order, the total norm moved by an ulp against the pre-refactor critic loop (which
clipped ``model.parameters()``), and the 2200-step demo drifted away from its old metrics."""

from __future__ import annotations

import torch

from lift_core.train import TrainModel, run_worker
from lift_core.train.loop import model_order


def test_model_order_follows_the_module():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    a, b, c, d = net.parameters()
    extra = torch.nn.Parameter(torch.zeros(1))
    got = model_order(net, [{"params": [c, d]}, {"params": [extra, a]}])
    assert [id(p) for p in got] == [id(a), id(c), id(d), id(extra)]


def test_clipping_sums_in_module_order(tmp_path, monkeypatch, Regression, loop_config):
    from lift_core.train import DataOrder

    class MlpRecipe(Regression):
        def build(self, ctx):
            net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
            w1, b1, w2, b2 = net.parameters()
            self.module_order = [w1, b1, w2, b2]
            return TrainModel(module=net, param_groups=[{"params": [w2, b2]}, {"params": [w1, b1], "lr": 0.02}],
                              trainable_state=lambda: {k: v.detach().clone() for k, v in net.state_dict().items()},
                              load_trainable_state=net.load_state_dict, handles={"order": DataOrder(16, 0)})

    seen = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, *args, **kwargs):
        params = list(params)
        seen.append(params)
        return clip(params, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    recipe = MlpRecipe()
    run_worker(recipe, loop_config(tmp_path, max_steps=2, grad_clip=0.1))
    assert len(seen) == 2
    for params in seen:
        assert [id(p) for p in params] == [id(p) for p in recipe.module_order]
