"""Shared inputs of the T2V tests: one tiny CogVideoX pipeline, a prompt table, generated videos, scores.

Everything expensive is session-scoped: the model is built once, the train split is generated once,
and the align tests share one scores table over the generated videos plus the two real fixture videos
(as the "hd-vila" real set).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from lift_core import storage
from lift_core.config import DIMENSIONS, PipelineConfig, load_config
from lift_core.schemas import MANIFEST_SCHEMA, PROMPTS_SCHEMA, SCORES_SCHEMA, rows_to_table

REPO = Path(__file__).resolve().parents[3]

PROMPTS = [
    ("two red circles moving left", "train"),
    ("one blue square moving up", "train"),
    ("three green triangles moving down", "train"),
    ("one yellow circle moving right", "test"),
    ("two blue triangles moving left", "test"),
]


def t2v_test_config(run_root: Path, *extra: str) -> PipelineConfig:
    """The demo config at test scale: 32x32, 9 frames, 2 denoising steps, 4 alignment steps."""
    return load_config(
        REPO / "configs" / "demo.yaml",
        [
            f"run_root={run_root}",
            "t2v.num_inference_steps=2",
            "t2v.pretrain=null",  # pre-training has its own tests (test_pretrain.py)
            # The smallest tiny model (TinyT2VConfig's defaults, not the demo's): these tests check wiring.
            "t2v.build_tiny.num_layers=1", "t2v.build_tiny.attention_head_dim=8", "t2v.build_tiny.time_embed_dim=2",
            "t2v.build_tiny.vae_block_out_channels=[8, 8, 8, 8]", "t2v.build_tiny.latent_channels=4",
            "generate.videos_per_prompt=2",
            "generate.num_cpus_per_actor=0.5",
            "align.train.max_steps=4",
            "align.train.batch_size=2",
            "align.train.checkpoint_every=2",
            "align.train.warmup_steps=0",
            "align.train.num_workers=1",
            "align.cpus_per_worker=0.5",
            "align.cache_num_cpus_per_actor=0.5",
            "evaluate.videos_per_prompt=1",
            *extra,
        ],
    )


@pytest.fixture(scope="session")
def make_t2v_cfg():
    """``make_t2v_cfg(run_root, *overrides)``: the test config with more overrides."""
    return t2v_test_config


@pytest.fixture(scope="session")
def t2v_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("t2v-run")


@pytest.fixture(scope="session")
def t2v_cfg(t2v_root) -> PipelineConfig:
    return t2v_test_config(t2v_root)


@pytest.fixture(scope="session")
def tiny_t2v(t2v_cfg) -> str:
    """The tiny CogVideoX pipeline directory (built once per session)."""
    from lift_core.t2v.builder import ensure_t2v_base

    return ensure_t2v_base(t2v_cfg)


@pytest.fixture(scope="session")
def prompts_uri(t2v_root) -> str:
    rows = [
        {"prompt_id": f"p{i:02d}", "caption": c, "source": "synthetic-prompts", "split": s, "dimensions": ["color"]}
        for i, (c, s) in enumerate(PROMPTS)
    ]
    uri = str(t2v_root / "prompts.parquet")
    storage.write_table(uri, rows_to_table(rows, PROMPTS_SCHEMA))
    return uri


@pytest.fixture(scope="session")
def generated(ray_session, t2v_cfg, tiny_t2v, prompts_uri):
    """The generate stage on the train split (3 prompts x 2 videos)."""
    from lift_core.t2v.generate import run_generate

    return run_generate(t2v_cfg, prompts_uri, split="train")


@pytest.fixture(scope="session")
def real_manifest(t2v_root, fixtures_dir) -> str:
    """The two real 480x720 CogVideoX fixture videos as the real ("hd-vila") set."""
    rows = []
    for name, caption in (("0.mp4", "a real video"), ("1.mp4", "another real video")):
        uri = str(fixtures_dir / "lift-demo" / name)
        rows.append({"video_id": storage.content_id(uri), "uri": uri, "caption": caption, "source": "hd-vila",
                     "split": "train"})
    uri = str(t2v_root / "real_manifest.parquet")
    storage.write_table(uri, rows_to_table(rows, MANIFEST_SCHEMA))
    return uri


def score_rows(manifest_rows: list[dict], rewards: list[float], critic_id: str = "critic-test") -> list[dict]:
    """Score rows (SCORES_SCHEMA) with the given overall rewards, as the score stage writes them."""
    now = datetime.now(timezone.utc)
    out = []
    for r, reward in zip(manifest_rows, rewards):
        row = {k: r[k] for k in ("video_id", "uri", "caption", "source")}
        row.update({"critic_id": critic_id, "reward": reward, "reward_lift": reward, "scored_at": now})
        for d in DIMENSIONS:
            row.update({f"p_good_{d}": reward, f"p_normal_{d}": 0.0, f"p_bad_{d}": 1 - reward,
                        f"label_{d}": "Good" if reward >= 0.5 else "Bad", f"reward_{d}": reward})
        out.append(row)
    return out


@pytest.fixture(scope="session")
def make_score_rows():
    """``make_score_rows(manifest_rows, rewards)``: score rows as the score stage writes them."""
    return score_rows


@pytest.fixture(scope="session")
def scores_uri(t2v_root, generated, real_manifest) -> str:
    gen = storage.read_table(generated.outputs["generated"]).to_pylist()
    real = storage.read_table(real_manifest).to_pylist()
    rows = gen + real
    rewards = [0.2 + 0.6 * i / (len(rows) - 1) for i in range(len(rows))]
    uri = str(t2v_root / "scores.parquet")
    storage.write_table(uri, rows_to_table(score_rows(rows, rewards), SCORES_SCHEMA))
    return uri
