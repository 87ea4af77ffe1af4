"""Prefect tasks of the critic stages: train_critic, score."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.common import task_options
from tasks.runner import execute


@task(**task_options("train_critic"), task_run_name="train-critic")
def train_critic_task(cfg: dict[str, Any], manifest_uri: str, frames_uri: str, fingerprint: str) -> dict[str, Any]:
    from lift_core.critic.train import run_train_critic

    return execute(cfg, "train_critic", "train-critic",
                   lambda c, progress: run_train_critic(c, manifest_uri, frames_uri, progress=progress))


@task(**task_options("score"), task_run_name="score")
def score_task(cfg: dict[str, Any], manifest_uris: list[str], frames_uris: list[str], adapter_uri: str,
               fingerprint: str) -> dict[str, Any]:
    from lift_core.critic.score_stage import run_score

    return execute(cfg, "score", "score",
                   lambda c, progress: run_score(c, manifest_uris, frames_uris, adapter_uri, progress=progress))
