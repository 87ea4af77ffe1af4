"""One key per stage: Prefect's task cache and the stage's output folder move together.

The key moves when what a stage computes could change (its config fields that change the output,
its inputs' content, the code), not when only where or how fast it runs changes.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lift_core.config import load_config
from lift_core.stages import STAGES, Lazy, get_stage
from tasks.stage_task import stage_task
from tasks.stages import Stages

REPO = Path(__file__).resolve().parents[2]


def _cfg(*extra: str):
    return load_config("configs/demo.yaml", ["run_root=/tmp/lift-keys", *extra])


@dataclass
class TaskCall:
    params: dict[str, Any]  # what the stage's Prefect task was called with
    prefect_key: str  # the cache key Prefect computes from them, with the task's own cache policy


class _RecordingTask:
    """Stands in for a stage's Prefect task: records the call and returns a finished state."""

    def __init__(self, task, calls: list[TaskCall]):
        self.task, self.calls = task, calls

    def submit(self, cfg: dict[str, Any], *, wait_for: Any = None, **params: Any):  # noqa: ARG002
        params = {"cfg": cfg, **params}
        key = self.task.cache_policy.compute_key(task_ctx=SimpleNamespace(task=self.task), inputs=params,
                                                 flow_parameters={})
        self.calls.append(TaskCall(params, key))
        result = {"stage": params["stage"], "key": params["key"], "out_uri": params["out_dir"], "outputs": {},
                  "counts": {}, "metrics": {}}
        state = SimpleNamespace(name="Completed", result=lambda: result)
        return SimpleNamespace(wait=lambda: None, state=state)  # a finished Prefect future


@pytest.fixture
def task_call(monkeypatch):
    """``task_call(cfg, method, *args)``: the Prefect task call ``Stages(cfg).<method>(*args)`` makes."""
    import tasks.common

    calls: list[TaskCall] = []
    monkeypatch.setattr(tasks.common, "for_run", lambda task, cfg: _RecordingTask(task, calls))

    def call(cfg, method: str, *args: Any) -> TaskCall:
        getattr(Stages(cfg), method)(*args).result()  # submitted; its inputs keyed once they exist
        return calls[-1]

    return call


@pytest.fixture
def critic_inputs(tmp_path) -> tuple[str, str]:
    manifest, frames = tmp_path / "manifest.parquet", tmp_path / "frames"
    manifest.write_bytes(b"a manifest")
    frames.mkdir()
    (frames / "part-0.parquet").write_bytes(b"frames")
    return str(manifest), str(frames)


def test_the_prefect_cache_key_is_the_stage_folder_key(task_call, critic_inputs):
    manifest, frames = critic_inputs
    cfg = _cfg()
    base = task_call(cfg, "train_critic", manifest, frames)
    key, out_dir = get_stage("train_critic").stage_out(cfg, manifest_uri=manifest, frames_uri=frames)
    assert (base.params["key"], base.params["out_dir"]) == (key, out_dir)
    assert out_dir.endswith(f"/train_critic/{key}")

    # Where and how fast it trains: the same folder, the same Prefect cache entry.
    workers = task_call(_cfg("critic.train.num_workers=2", "critic.cpus_per_worker=2"), "train_critic", manifest, frames)
    assert workers.params["key"] == key and workers.prefect_key == base.prefect_key
    assert workers.params["cfg"] != base.params["cfg"]  # the task did get the other config

    # What it computes: a new folder and a new Prefect cache entry.
    lr = task_call(_cfg("critic.train.lr=0.5"), "train_critic", manifest, frames)
    assert lr.params["key"] != key and lr.prefect_key != base.prefect_key


def test_the_prefect_key_moves_with_the_content_of_an_input(task_call, critic_inputs):
    manifest, _ = critic_inputs
    first = task_call(_cfg(), "decode", manifest)
    assert task_call(_cfg(), "decode", manifest).prefect_key == first.prefect_key
    with open(manifest, "wb") as f:  # edited in place: same URI, new content
        f.write(b"another manifest")
    again = task_call(_cfg(), "decode", manifest)
    assert again.params["key"] != first.params["key"] and again.prefect_key != first.prefect_key


def test_the_same_stage_under_another_label_is_the_same_cache_entry(task_call, critic_inputs):
    manifest, _ = critic_inputs
    real, generated = task_call(_cfg(), "decode", manifest), task_call(_cfg(), "decode", manifest, "decode-generated")
    assert generated.params["label"] == "decode-generated" and generated.prefect_key == real.prefect_key


def test_a_stage_key_follows_its_own_config_only(critic_inputs):
    manifest, frames = critic_inputs
    base, align_changed, decode_changed = _cfg(), _cfg("align.min_reward=0.3"), _cfg("decode.height=32")

    def key(cfg, stage: str, **inputs: Any) -> str:
        return get_stage(stage).stage_out(cfg, **inputs)[0]

    critic = {"manifest_uri": manifest, "frames_uri": frames}
    assert key(base, "train_critic", **critic) == key(align_changed, "train_critic", **critic)
    aligned = {"scores_uri": manifest, "manifest_uris": [manifest]}
    assert key(base, "align", **aligned) != key(align_changed, "align", **aligned)
    assert key(base, "decode", manifest_uri=manifest) != key(decode_changed, "decode", manifest_uri=manifest)
    scored = {"manifest_uris": [manifest], "frames_uris": [frames], "adapter_uri": frames}
    assert key(base, "score", **scored) != key(decode_changed, "score", **scored)  # the frame size matters
    generated = {"prompts_uri": manifest, "split": "train", "lora_uri": None, "tag": "base"}
    assert key(base, "generate", **generated) == key(decode_changed, "generate", **generated)
    # Where a run executes (Ray, Prefect settings) is not what it computes.
    elsewhere = _cfg("ray.num_cpus=1", "prefect.retries=0", "decode.batch_size=2", "decode.num_cpus=2")
    assert key(base, "decode", manifest_uri=manifest) == key(elsewhere, "decode", manifest_uri=manifest)
    assert key(base, "align", **aligned) == key(_cfg("align.train.num_workers=2"), "align", **aligned)


def test_a_stage_is_keyed_on_exactly_the_inputs_it_runs_on():
    """Each declared key function takes the inputs of its run function; what the run takes besides
    them (progress, hooks) is optional and does not change the output."""
    assert list(STAGES) == ["synth", "ingest", "decode", "train_critic", "generate", "score", "align", "evaluate"]
    def signature(fn) -> list[inspect.Parameter]:
        return list(inspect.signature(fn.resolve() if isinstance(fn, Lazy) else fn).parameters.values())

    for name, stage in STAGES.items():
        run, keyed = signature(stage.run), [p.name for p in signature(stage.stage_out)]
        assert keyed[0] == "cfg" and [p.name for p in run[:len(keyed)]] == keyed, name
        hooks = run[len(keyed):]
        assert "progress" in [p.name for p in hooks] and all(p.default is not p.empty for p in hooks), name
        assert stage_task(name).name == name
    with pytest.raises(KeyError, match="the stages are"):
        get_stage("train-critic")


def test_reading_the_registry_imports_neither_prefect_nor_the_stage_modules():
    """lift_core never imports Prefect, and the CLI's InlineStages does not either; stage modules (torch,
    Ray, transformers) load when a stage runs or is keyed."""
    probe = ("import sys, lift_core.stages, tasks.stages; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'torch', 'ray', 'transformers'}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
