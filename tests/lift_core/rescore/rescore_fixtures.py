"""Shared inputs of the rescoring tests: generated videos with sidecar captions, and a tiny critic.

Imported by this folder's conftest.py and by tests/flows/test_rescore.py (fixtures are found by
name in the importing module).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lift_core.video.io import encode_mp4
from lift_core.video.synth import render, sample_spec


@pytest.fixture(scope="session")
def synth_videos() -> list[tuple[bytes, str]]:
    """Twelve small procedurally rendered generations: (mp4 bytes, caption), all distinct bytes."""
    rng = np.random.RandomState(7)
    out = []
    for i in range(12):
        spec = sample_spec(rng)
        out.append((encode_mp4(render(spec, 32, 32, 9, seed=i), fps=8), spec.caption))
    return out


def add_generations(folder: Path, videos: list[tuple[bytes, str]], start: int = 0) -> list[Path]:
    """Write ``videos`` as ``gen-<i>.mp4`` + sidecar ``gen-<i>.json`` (the video-dir convention)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (data, caption) in enumerate(videos, start=start):
        p = folder / f"gen-{i:03d}.mp4"
        p.write_bytes(data)
        (folder / f"gen-{i:03d}.json").write_text(json.dumps({"caption": caption}))
        paths.append(p)
    return paths


def add_real_fixtures(folder: Path, fixtures_dir: Path) -> list[Path]:
    """The two real 480x720 CogVideoX fixtures, captions from their LiFT inference entries (test.json)."""
    entries = {Path(e["video"]).name: e["caption"] for e in json.loads((fixtures_dir / "lift-demo/test.json").read_text())}
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("0.mp4", "1.mp4"):
        dst = folder / f"real-{name}"
        shutil.copyfile(fixtures_dir / "lift-demo" / name, dst)
        (folder / f"real-{Path(name).stem}.json").write_text(json.dumps({"caption": entries[name]}))
        out.append(dst)
    return out


@pytest.fixture(scope="session")
def write_generations():
    """``write_generations(folder, videos, start=0)``: see ``add_generations``."""
    return add_generations


@pytest.fixture(scope="session")
def write_real_fixtures(fixtures_dir):
    """``write_real_fixtures(folder)``: the two real fixtures with sidecar captions."""
    return lambda folder: add_real_fixtures(folder, fixtures_dir)


# --------------------------------------------------------------------------- a tiny critic
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vision_depth": 1, "vision_embed_dim": 32, "vision_num_heads": 2}


def make_adapter(base: str, out: Path, seed: int) -> str:
    """A freshly initialised PEFT LoRA adapter on ``base`` (random A and B: its rewards differ from the base's)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    peft.save_pretrained(str(out))
    return str(out)


@pytest.fixture(scope="session")
def critic_base(tmp_path_factory) -> str:
    import torch

    from lift_core.config import TinyCriticConfig
    from lift_core.critic.builder import build_tiny_critic

    torch.set_num_threads(2)
    return build_tiny_critic(str(tmp_path_factory.mktemp("critic") / "base"), TinyCriticConfig(**TINY))


@pytest.fixture(scope="session")
def critic_a(critic_base, tmp_path_factory) -> str:
    return make_adapter(critic_base, tmp_path_factory.mktemp("adapter-a") / "adapter", seed=1)


@pytest.fixture(scope="session")
def critic_b(critic_base, tmp_path_factory) -> str:
    return make_adapter(critic_base, tmp_path_factory.mktemp("adapter-b") / "adapter", seed=2)


@pytest.fixture
def rescore_cfg(critic_base):
    """``rescore_cfg(tmp_path, **rescore_fields)``: a small CPU config whose store lives under ``tmp_path``."""
    from lift_core.config import config_from_dict

    def make(root: Path, **rescore):
        return config_from_dict({
            "run_root": str(root / "run"),
            "critic": {"model": critic_base},
            "decode": {"frames": 4, "height": 56, "width": 56},
            "score": {"batch_size": 8},
            "rescore": {"store": "{run_root}/scores_store", "batch_size": 4, **rescore},
        })

    return make
