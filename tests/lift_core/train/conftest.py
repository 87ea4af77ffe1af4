"""The loop tests' small recipe: least squares on a fixed dataset, and how to run and read it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.train import DataOrder, LoopSettings, TrainModel

N, D = 16, 3


class RegressionRecipe:
    """Least squares on a fixed dataset; the weights start from a seeded init (the loop seeds torch)."""

    log_columns = [("loss", pa.float64())]

    def __init__(self, dtype=torch.float32):
        rng = np.random.default_rng(0)
        self.x = torch.from_numpy(rng.standard_normal((N, D)).astype(np.float32))
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.from_numpy(rng.standard_normal(N).astype(np.float32))
        self.dtype = dtype

    def build(self, ctx):
        net = torch.nn.Linear(D, 1).to(self.dtype)
        return TrainModel(module=net, param_groups=[{"params": list(net.parameters())}],
                          trainable_state=lambda: {k: v.detach().clone() for k, v in net.state_dict().items()},
                          load_trainable_state=net.load_state_dict, handles={"order": DataOrder(N, 0)})

    def make_batch(self, ctx, model, positions):
        idx = [model.handles["order"](p) for p in positions]
        return self.x[idx], self.y[idx]

    def normalizer(self, batch):
        return float(len(batch[1]))

    def loss(self, ctx, model, net, batch):
        x, y = batch
        err = ((net(x.to(next(net.parameters()).dtype)).squeeze(-1).float() - y) ** 2).sum()
        return err, {"sq": err, "n": float(len(y))}

    def log_row(self, stats):
        return {"loss": stats["sq"] / stats["n"]}

    def finalize(self, ctx, model, log_rows):
        storage.write_json(storage.join(ctx.out_uri, "final.json"), {"rows": len(log_rows)})


def _loop_config(out, callbacks=(), **settings):
    base = dict(max_steps=6, batch_size=4, lr=0.05, checkpoint_every=2, keep_checkpoints=5)
    return {"cfg": PipelineConfig().model_dump(mode="json"), "settings": LoopSettings(**{**base, **settings}),
            "out_uri": str(out), "callbacks": list(callbacks)}


def _train_log(out):
    return storage.read_table(str(out / "train_log.parquet")).to_pylist()


@pytest.fixture
def Regression():  # noqa: N802 - the fixture is the class
    return RegressionRecipe


@pytest.fixture
def loop_config():
    """``loop_config(out, callbacks=(), **LoopSettings overrides)``: 6 steps of 4, checkpoints every 2."""
    return _loop_config


@pytest.fixture
def train_log():
    """``train_log(out)``: the rows of ``out/train_log.parquet``."""
    return _train_log
