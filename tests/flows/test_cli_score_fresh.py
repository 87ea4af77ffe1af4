"""``lift score`` never serves stale scores: a critic retrained into the same folder (same file names and
sizes) and scored again with the same ``--work-dir`` is scored anew, under a new ``critic_id``."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from lift_core.config import TinyCriticConfig

TINY = TinyCriticConfig(hidden_size=64, intermediate_size=128, vision_embed_dim=32, seed=0)


def save_adapter(base: str, out: str, seed: int) -> None:
    """An untrained LoRA of fixed shapes whose values depend on ``seed``: a retrain into the same folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from lift_core.critic.backbone import peft_probe_quiet

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with peft_probe_quiet():
        get_peft_model(model, lora).save_pretrained(out)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from lift_core.critic.builder import build_tiny_critic

    root = tmp_path_factory.mktemp("fresh-critic")
    build_tiny_critic(str(root / "base"), TINY)
    return str(root / "base")


def score(args: list[str]) -> dict:
    from flows.cli import app

    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


@pytest.mark.slow  # two real scoring runs (about a minute on 2 CPUs)
def test_a_critic_retrained_in_place_is_scored_anew(ray_session, tmp_path, fixtures_dir, base_dir):
    adapter = tmp_path / "C" / "adapter"
    save_adapter(base_dir, str(adapter), seed=1)
    sizes = {p.name: p.stat().st_size for p in adapter.iterdir()}
    args = ["--verify", "score", "--videos", str(fixtures_dir / "lift-demo/test.json"), "--critic", str(adapter),
            "--out", str(tmp_path / "scores.parquet"), "--work-dir", str(tmp_path / "wd"), "score.max_new_tokens=2"]
    first = score(args)
    save_adapter(base_dir, str(adapter), seed=2)
    assert {p.name: p.stat().st_size for p in adapter.iterdir()} == sizes  # only the bytes differ
    second = score(args)
    assert second["critic_id"] != first["critic_id"]
    assert second["stage_dir"] != first["stage_dir"] and second["scored"] == first["scored"] > 0
    assert second["resumed"] == 0
