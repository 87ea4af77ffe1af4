"""Shared by the stack tests: the tiny lift-full config, API helpers and output digests."""

from __future__ import annotations

import hashlib
import socket
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "infra"))
import local_stack  # noqa: E402

# Every stage at its smallest: 24 rated + 4 real videos, 2 critic steps (1 semantic, 1 all), 2 generated videos,
# 1 alignment step, 1 held-out prompt. The pipeline is the real one; only the sizes shrink.
TINY = [
    "data.synthetic.n=24", "data.synthetic.n_real=4", "data.synthetic.n_prompts=8",
    "critic.build_tiny.hidden_size=64", "critic.build_tiny.intermediate_size=128",
    "critic.build_tiny.vision_embed_dim=32",
    "critic.train.max_steps=2", "critic.train.batch_size=4", "critic.train.checkpoint_every=1",
    "critic.curriculum=[{steps: 1, dimensions: [semantic]}]",
    "critic.train.warmup_steps=0",
    "t2v.num_inference_steps=2", "generate.videos_per_prompt=1", "generate.max_prompts=2",
    "score.batch_size=2",
    "align.train.max_steps=1", "align.train.batch_size=2", "align.train.checkpoint_every=1",
    "align.train.warmup_steps=0",
    "evaluate.max_prompts=1", "evaluate.videos_per_prompt=1",
]
STAGES = ("synth", "ingest", "decode", "train_critic", "generate", "score", "align", "evaluate")
TASKS = {"synth", "ingest", "decode", "train-critic", "generate-base-train", "decode-generated", "score", "align",
         "evaluate"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def params(run_root: Path | str, *extra: str) -> dict[str, Any]:
    return {"config": "configs/demo.yaml", "overrides": [f"run_root={run_root}", *TINY, *extra]}


def tree_digest(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (a changed or new byte shows)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and not any(rel.startswith(e) for e in exclude):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def artifacts(env: dict[str, str], flow_run_id: str) -> dict[str, dict[str, Any]]:
    found = local_stack.api(env, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    return {a["key"]: a for a in found if a.get("key")}


def task_states(env: dict[str, str], flow_run_id: str, expect: int = len(TASKS), timeout: float = 60.0) -> dict[str, str]:
    """Task run name -> state name, once ``expect`` task runs are in a final state.

    The server records task run states from events, a moment after the flow run itself ends.
    """
    deadline = time.monotonic() + timeout
    while True:
        runs = local_stack.task_runs(env, flow_run_id)
        final = [t for t in runs if t.get("state") and t["state"]["type"] in local_stack.TERMINAL]
        if len(final) >= expect or time.monotonic() > deadline:
            return {t["name"]: t["state"]["name"] if t.get("state") else None for t in runs}
        time.sleep(1.0)


def stage_dirs(run_root: Path, stage: str) -> list[Path]:
    """The finished output folders of ``stage`` under ``run_root``."""
    return sorted(p.parent for p in (run_root / stage).glob("*/_SUCCESS.json"))


def stage_dir(run_root: Path, stage: str) -> Path:
    """The one finished output folder of ``stage`` under ``run_root``."""
    done = stage_dirs(run_root, stage)
    assert len(done) == 1, (stage, done)
    return done[0]


def run_table(env: dict[str, str], flow_run_id: str) -> list[dict[str, Any]]:
    """The rows of a lift-full run's ``lift-full-run`` table artifact: task, state, key, counts, output."""
    import json

    data = artifacts(env, flow_run_id)["lift-full-run"]["data"]
    return json.loads(data) if isinstance(data, str) else data


STAGE_OF_TASK = {"synth": "synth", "ingest": "ingest", "decode": "decode", "train-critic": "train_critic",
                 "generate-base-train": "generate", "generate-base": "generate", "decode-generated": "decode",
                 "score": "score", "align": "align", "evaluate": "evaluate"}


def run_outputs(env: dict[str, str], flow_run_id: str, run_root: Path) -> dict[str, Path]:
    """task label -> the stage output folder that task of this flow run produced (or found)."""
    return {r["task"]: run_root / STAGE_OF_TASK[r["task"]] / r["key"] for r in run_table(env, flow_run_id)}
