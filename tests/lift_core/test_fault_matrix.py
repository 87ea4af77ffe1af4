"""The fault matrix: each Ray stage killed with SIGKILL mid-stage, then rerun, gives exactly the outputs of
an uninterrupted run.

Decode, scoring and generation run in a child process (a driver attached to this session's Ray) that is
killed as soon as the stage has written its first partial output and before it finishes; the rerun in
this process resumes from what the dead driver left. Critic training and alignment are killed inside a
Ray Train worker instead (the loop's callbacks): ``tests/lift_core/critic/test_train.py`` and
``tests/lift_core/t2v/test_align.py`` compare the resumed runs with uninterrupted ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lift_core import storage
from lift_core.config import load_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _config(run_root: Path, models: Path):
    """The demo config at fault-matrix scale; the tiny models are shared by every run root."""
    return load_config(REPO / "configs" / "demo.yaml", [
        f"run_root={run_root}",
        f"critic.model={models}/critic-base", f"t2v.model={models}/t2v-base",
        "data.synthetic.n=16", "data.synthetic.n_real=8", "data.synthetic.n_prompts=6",
        "data.synthetic.num_frames=9", "data.synthetic.height=32", "data.synthetic.width=32",
        "decode.batch_size=1", "score.batch_size=2", "score.rows_per_shard=2", "score.num_cpus_per_actor=0.5",
        "t2v.num_inference_steps=2", "generate.videos_per_prompt=2", "generate.num_cpus_per_actor=0.5",
        "t2v.pretrain=null", "critic.pretrain=null",  # random tiny bases of the demo's sizes: wiring only
    ])


@pytest.fixture(scope="module")
def inputs(ray_session, tmp_path_factory):
    """Shared inputs: the synthetic manifest and prompts, a critic adapter, and the frames of the manifest."""
    from lift_core.critic.backbone import load_critic
    from lift_core.critic.builder import ensure_critic_base
    from lift_core.critic.train import add_lora
    from lift_core.data.ingest import run_ingest
    from lift_core.t2v.builder import ensure_t2v_base
    from lift_core.video.decode_stage import run_decode
    from lift_core.video.synth import run_synth

    root = tmp_path_factory.mktemp("fault-inputs")
    cfg = _config(root / "run", root / "models")
    ingest = run_ingest(cfg, run_synth(cfg).outputs)
    frames = run_decode(cfg, ingest.outputs["manifest"])
    loaded = load_critic(ensure_critic_base(cfg), backbone=cfg.critic.backbone, device="cpu", frame_size=(56, 56))
    adapter = str(root / "adapter")
    add_lora(loaded.model, cfg.critic.lora).save_pretrained(adapter)
    ensure_t2v_base(cfg)
    return {"root": root, "manifest": ingest.outputs["manifest"], "prompts": ingest.outputs["prompts"],
            "frames": frames.outputs["frames"], "adapter": adapter}


CALLS = {
    "decode": "from lift_core.video.decode_stage import run_decode as f; f(cfg, a['manifest'])",
    "score": "from lift_core.critic.score_stage import run_score as f; f(cfg, [a['manifest']], [a['frames']], a['adapter'])",
    "generate": "from lift_core.t2v.generate import run_generate as f; f(cfg, a['prompts'], split='train')",
}


def _run_in_process(stage: str, cfg, a: dict) -> storage.StageResult:
    scope: dict = {"cfg": cfg, "a": a}
    exec(CALLS[stage].replace("f(cfg", "result = f(cfg"), scope)  # noqa: S102 - the three calls above
    return scope["result"]


def _partial_outputs(stage_root: Path) -> list[Path]:
    return [p for p in stage_root.rglob("*") if p.is_file() and not p.name.startswith(".")
            and p.suffix in (".parquet", ".mp4", ".safetensors")]


def _kill_mid_stage(stage: str, run_root: Path, a: dict, ray_address: str) -> int:
    """Start the stage in a child driver; SIGKILL it once it has written a partial output. Returns how many
    partial outputs it had left."""
    code = ("import json, sys\nfrom lift_core.config import PipelineConfig\n"
            "cfg = PipelineConfig.model_validate(json.loads(sys.argv[1]))\n"
            "a = json.loads(sys.argv[2])\n" + CALLS[stage] + "\n")
    cfg = _config(run_root, a["root"] / "models")
    env = {**os.environ, "LIFT_RAY_ADDRESS": ray_address}
    args = json.dumps({k: str(v) for k, v in a.items()})
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg.model_dump(mode="json")), args],
                            cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stage_root = run_root / stage
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{stage} ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            partial = _partial_outputs(stage_root) if stage_root.exists() else []
            if partial:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
                assert not list(stage_root.rglob("_SUCCESS.json")), f"{stage} had finished: not a mid-stage kill"
                return len(partial)
            time.sleep(0.05)
        raise AssertionError(f"{stage} wrote no output in 240 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _rows(uri: str, drop: tuple[str, ...] = ()) -> list[dict]:
    table = storage.read_table(uri)
    rows = [{k: v for k, v in r.items() if k not in drop} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _frames_rows(frames_uri: str) -> list[dict]:
    from lift_core.video.frames import iter_frames

    return sorted(({**r, "frames": r["frames"].tobytes()} for r in iter_frames(frames_uri)),
                  key=lambda r: r["video_id"])


@pytest.mark.parametrize("stage", ["decode", "score", "generate"])
def test_sigkill_mid_stage_then_rerun_gives_the_uninterrupted_outputs(stage, inputs, tmp_path, ray_address):
    a = inputs
    reference = _run_in_process(stage, _config(tmp_path / "reference", a["root"] / "models"), a)
    crashed_root = tmp_path / "crashed"
    assert _kill_mid_stage(stage, crashed_root, a, ray_address) >= 1
    resumed = _run_in_process(stage, _config(crashed_root, a["root"] / "models"), a)
    assert resumed.key == reference.key

    if stage == "decode":
        assert _frames_rows(resumed.outputs["frames"]) == _frames_rows(reference.outputs["frames"])
        assert _rows(resumed.outputs["quarantine"]) == _rows(reference.outputs["quarantine"])
    elif stage == "score":
        # The rerun scores what is left beside other neighbours in a batch (already-scored videos pass the
        # actors unscored), and CPU kernels sum in an order that depends on the batch's shape: scores may
        # differ in the last float32 bits. Rows, ids, labels and reasons must be equal; floats to 1e-5.
        def by_pair(uri: str) -> list[dict]:
            rows = storage.read_table(uri).drop(["scored_at"]).to_pylist()
            return sorted(rows, key=lambda r: (r["video_id"], r["caption_id"]))

        resumed_rows, reference_rows = by_pair(resumed.outputs["scores"]), by_pair(reference.outputs["scores"])
        exact = lambda r: {k: v for k, v in r.items() if not isinstance(v, float)}  # noqa: E731
        floats = lambda r: {k: v for k, v in r.items() if isinstance(v, float)}  # noqa: E731
        assert [exact(r) for r in resumed_rows] == [exact(r) for r in reference_rows]
        for got, want in zip(resumed_rows, reference_rows):
            assert floats(got) == pytest.approx(floats(want), rel=1e-5, abs=1e-6), got["video_id"]
    else:
        drop = ("uri",)  # under each run's own root; the video_id is the hash of the mp4 bytes
        assert _rows(resumed.outputs["generated"], drop) == _rows(reference.outputs["generated"], drop)
