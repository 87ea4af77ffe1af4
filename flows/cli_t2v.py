"""``lift generate``, ``lift align``, ``lift evaluate``: the T2V stages without Prefect.

Each takes ``--config`` plus ``dotted.key=value`` overrides and explicit input URIs, runs the same
stage as lift-full (``lift_core.stages``; resumable, a finished stage is a no-op) and prints its
``StageResult`` as JSON. Expected failures exit 2 with one line (``flows.cli.main``).
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer


def _load(config: Optional[str], overrides: Optional[List[str]]):
    from flows.common import load_flow_config
    from lift_core.config import PipelineConfig, load_config

    if config is None:
        return load_config(None, overrides)
    return PipelineConfig.model_validate(load_flow_config(config, overrides))


def _need(uri: str, what: str) -> None:
    from lift_core import storage

    if not storage.exists(uri):
        raise FileNotFoundError(f"{what} not found: {uri}")


def _stages(cfg):
    from lift_core.progress import log_progress
    from tasks.stages import InlineStages

    return InlineStages(cfg, progress=log_progress)


def _echo(result: dict) -> None:
    typer.echo(json.dumps(result, indent=2, default=str))


def generate(
    prompts: str = typer.Option(..., "--prompts", help="prompt table Parquet (ingest's prompts.parquet)"),
    split: str = typer.Option("train", "--split", help="prompt split to generate: train, val or test"),
    lora: Optional[str] = typer.Option(None, "--lora", help="diffusers LoRA dir to generate with (e.g. align's lora/)"),
    tag: str = typer.Option("base", "--tag", help="name of the model variant in generated.parquet"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="pipeline config YAML"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """Generate videos for a prompt split with fixed seeds (Ray Data actor pool); rerunning resumes."""
    cfg = _load(config, overrides)
    _need(prompts, "--prompts")
    if lora:
        _need(lora, "--lora")
    _echo(_stages(cfg).generate(prompts, split=split, lora_uri=lora, tag=tag))


def align(
    scores: str = typer.Option(..., "--scores", help="scores.parquet (critic rewards of the videos)"),
    manifest: List[str] = typer.Option(..., "--manifest", help="manifest(s) holding the scored videos (repeatable)"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="pipeline config YAML"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """Reward-weighted alignment of the T2V model (Ray Train); rerunning resumes from the last checkpoint."""
    cfg = _load(config, overrides)
    _need(scores, "--scores")
    for m in manifest:
        _need(m, "--manifest")
    _echo(_stages(cfg).align(scores, list(manifest)))


def evaluate(
    prompts: str = typer.Option(..., "--prompts", help="prompt table Parquet; its held-out split is generated"),
    critic: str = typer.Option(..., "--critic", help="critic PEFT adapter dir"),
    lora: Optional[str] = typer.Option(None, "--lora", help="aligned LoRA dir (align's lora/)"),
    weights: Optional[str] = typer.Option(None, "--weights", help="fully fine-tuned weights dir (align's weights/)"),
    train_log: Optional[str] = typer.Option(None, "--train-log", help="align's train_log.parquet (loss curve)"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="pipeline config YAML"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides as dotted.key=value"),
) -> None:
    """Base vs aligned on held-out prompts: critic rewards, win rate, temporal flickering, report.md."""
    if bool(lora) == bool(weights):
        raise ValueError("give exactly one of --lora or --weights")
    cfg = _load(config, overrides)
    for uri, what in ((prompts, "--prompts"), (critic, "--critic"), (lora or weights, "--lora/--weights")):
        _need(uri, what)
    outputs = {"lora": lora} if lora else {"weights": weights}
    if train_log:
        _need(train_log, "--train-log")
        outputs["train_log"] = train_log
    _echo(_stages(cfg).evaluate(prompts, critic, outputs))


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("align")(align)
    app.command("evaluate")(evaluate)
