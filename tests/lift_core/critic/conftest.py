"""Shared fixtures of the critic tests: one tiny critic and one small rated dataset per session.

The dataset is rendered with the synthetic demo grammar straight into the frames Parquet contract
(``lift_core.video.frames.frames_table``) plus a manifest, so no video is encoded or decoded here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lift_core import storage
from lift_core.config import DIMENSIONS, PipelineConfig, TinyCriticConfig, config_from_dict
from vila_fixtures import tiny_vila  # noqa: F401 - a tiny VILA checkpoint + LiFT adapter (shared with tests/flows)

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vision_depth": 1,
    "vision_embed_dim": 32,
    "vision_num_heads": 2,
    "tie_word_embeddings": False,
}


@pytest.fixture(scope="session")
def tiny_cfg() -> TinyCriticConfig:
    return TinyCriticConfig(**TINY)


@pytest.fixture(scope="session")
def tiny_critic_dir(tmp_path_factory, tiny_cfg) -> str:
    from lift_core.critic.builder import build_tiny_critic

    return build_tiny_critic(str(tmp_path_factory.mktemp("critic") / "critic-base"), tiny_cfg)


@pytest.fixture(scope="session")
def loaded_critic(tiny_critic_dir):
    import torch

    from lift_core.critic.backbone import load_critic

    torch.set_num_threads(1)
    return load_critic(tiny_critic_dir, device="cpu", frame_size=(56, 56))


def render_rated(n: int, seed: int = 0, size: int = 56, frames: int = 8) -> tuple[list[dict], list[dict]]:
    """``n`` synthetic rated videos: manifest rows and frames rows (8 frames at 56 px, the demo's decode)."""
    from lift_core.video import synth

    rng = np.random.RandomState(seed)
    manifest, frame_rows = [], []
    for i in range(n):
        spec = synth.sample_spec(rng, levels=(i % 3, (i // 3) % 3, (i + 1) % 3))
        video = synth.render(spec, size, size, frames, seed=seed * 1000 + i)
        vid = storage.sha256_hex(video.tobytes())[:16]
        labels, reasons = spec.labels(), spec.reasons()
        manifest.append({
            "video_id": vid, "uri": f"memory://synthetic/{i}.mp4", "caption": spec.caption, "source": "lift-hra",
            "split": "test" if i % 4 == 3 else "train",
            **{f"label_{d}": labels[d] for d in DIMENSIONS}, **{f"reason_{d}": reasons[d] for d in DIMENSIONS},
        })
        frame_rows.append({"video_id": vid, "frames": video, "frame_indices": list(range(frames)),
                           "num_frames_total": frames, "fps": 8.0})
    return manifest, frame_rows


@pytest.fixture(scope="session")
def rated_data(tmp_path_factory) -> dict[str, str]:
    """A manifest (12 rated videos, 3 in the test split, plus one real video) and its frames Parquet."""
    from lift_core.schemas import MANIFEST_SCHEMA, rows_to_table
    from lift_core.video.frames import frames_table

    root = tmp_path_factory.mktemp("rated")
    manifest, frame_rows = render_rated(12)
    manifest.append({"video_id": "ffffffffffffffff", "uri": "memory://real/0.mp4", "caption": "one red circle moving up",
                     "source": "hd-vila", "split": "train"})
    storage.write_table(str(root / "manifest.parquet"), rows_to_table(manifest, MANIFEST_SCHEMA))
    storage.write_table(str(root / "frames" / "part-00000.parquet"), frames_table(frame_rows[:6]))
    storage.write_table(str(root / "frames" / "part-00001.parquet"), frames_table(frame_rows[6:]))
    return {"manifest": str(root / "manifest.parquet"), "frames": str(root / "frames"), "root": str(root)}


def train_config(run_root: str | Path, **critic_overrides) -> PipelineConfig:
    """A tiny, fast critic-training config (the same tiny model as ``tiny_critic_dir``)."""
    critic = {
        "model": f"{run_root}/models/critic-base",
        "build_tiny": TINY,
        "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj", "fc1", "fc2"],
                 "modules_to_save": ["merger"]},
        "train": {"num_workers": 1, "batch_size": 4, "max_steps": 8, "lr": 0.005, "warmup_steps": 1,
                  "checkpoint_every": 3, "seed": 0},
        "label_token_weight": 2.0,
        "eval_batch_size": 8,
    }
    critic.update(critic_overrides)
    return config_from_dict({"run_root": str(run_root), "ray": {"num_cpus": 2}, "critic": critic})


@pytest.fixture(scope="session")
def make_train_config():
    return train_config
