"""Ray Train for the critic: one ``TorchTrainer`` call, CPU (gloo) or GPU (NCCL) by config only."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

from lift_core.config import PipelineConfig


def scaling(cfg: PipelineConfig):
    """``ScalingConfig`` from ``critic.train``: ``num_workers`` workers, each with ``critic.cpus_per_worker``
    CPUs and, with ``use_gpu``, one GPU (TorchTrainer then sets up NCCL; otherwise gloo)."""
    from ray.train import ScalingConfig

    tr = cfg.critic.train
    resources: dict[str, float] = {"CPU": cfg.critic.cpus_per_worker}
    if tr.use_gpu:
        resources["GPU"] = 1
    return ScalingConfig(num_workers=tr.num_workers, use_gpu=tr.use_gpu, resources_per_worker=resources)


def fit(cfg: PipelineConfig, train_loop: Callable[[dict[str, Any]], None], config: dict[str, Any], run_name: str) -> None:
    """Run ``train_loop(config)`` on every worker; raises when the run fails (after
    ``critic.max_failures`` restarts of the worker group, each resuming from the last checkpoint)."""
    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from lift_core.distributed.ray_runtime import ensure_ray

    ensure_ray(cfg.ray)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=scaling(cfg),
        torch_config=TorchConfig(backend="nccl" if cfg.critic.train.use_gpu else "gloo"),
        run_config=RunConfig(
            name=run_name,
            storage_path=os.path.join(tempfile.gettempdir(), "lift-ray-train"),
            failure_config=FailureConfig(max_failures=cfg.critic.max_failures),
        ),
    )
    trainer.fit()
