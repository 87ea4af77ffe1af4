"""No stale results: every stage key and critic id follows the bytes of what decides the result (adapter,
base model, input files), not their names or sizes. Each case rewrites one input in place, keeping its
name and size, and expects a new key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.model_identity import base_fingerprint


def same_size_rewrite(path: Path) -> None:
    """New bytes, same name and size, mtime set back: what a retrain of the same shape leaves."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


def write_adapter(folder: Path, value: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2,
                                                            "base_model_name_or_path": "/anywhere"}))
    save_file({"lora_A.weight": torch.full((2, 4), value)}, str(folder / "adapter_model.safetensors"))


@pytest.fixture
def world(tmp_path):
    """A run's inputs on disk: a manifest, frames, a critic adapter, a critic base and a T2V base folder."""
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "part-0.parquet").write_bytes(b"frames-0")
    (tmp_path / "manifest.parquet").write_bytes(b"manifest")
    (tmp_path / "scores.parquet").write_bytes(b"scores")
    (tmp_path / "prompts.parquet").write_bytes(b"prompts")
    write_adapter(tmp_path / "C" / "adapter", 1.0)
    for base in ("critic-base", "t2v-base"):
        (tmp_path / base).mkdir()
        (tmp_path / base / "config.json").write_text("{}")
        (tmp_path / base / "model.safetensors").write_bytes(b"weights-of-" + base.encode())
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "pytorch_lora_weights.safetensors").write_bytes(b"lora")
    cfg = PipelineConfig()
    cfg = cfg.model_copy(update={
        "run_root": str(tmp_path / "run"),
        "critic": cfg.critic.model_copy(update={"model": str(tmp_path / "critic-base"), "build_tiny": None}),
        "t2v": cfg.t2v.model_copy(update={"model": str(tmp_path / "t2v-base"), "build_tiny": None}),
    })
    return tmp_path, cfg


def keys(root: Path, cfg: PipelineConfig) -> dict[str, str]:
    from lift_core.critic import score_stage, train_stage
    from lift_core.t2v import align_stage, evaluate, generate

    m, f, a = str(root / "manifest.parquet"), str(root / "frames"), str(root / "C" / "adapter")
    return {
        "train_critic": train_stage.stage_out(cfg, m, f)[0],
        "score": score_stage.stage_out(cfg, [m], [f], a)[0],
        "generate": generate.generate_stage_dir(cfg, str(root / "prompts.parquet"), "train", str(root / "lora"), "x")[0],
        "align": align_stage.stage_out(cfg, str(root / "scores.parquet"), [m])[0],
        "evaluate": evaluate.stage_out(cfg, str(root / "prompts.parquet"), a, {"lora": str(root / "lora")})[0],
    }


@pytest.mark.parametrize("changed, stages", [
    ("C/adapter/adapter_model.safetensors", {"score", "evaluate"}),  # retrained into the same --out
    ("critic-base/model.safetensors", {"train_critic", "score", "evaluate"}),
    ("t2v-base/model.safetensors", {"generate", "align", "evaluate"}),
    ("manifest.parquet", {"train_critic", "score", "align"}),
    ("frames/part-0.parquet", {"train_critic", "score"}),
    ("lora/pytorch_lora_weights.safetensors", {"generate", "evaluate"}),
    ("prompts.parquet", {"generate", "evaluate"}),
])
def test_a_same_size_change_of_what_decides_a_result_changes_the_stage_keys(world, changed, stages):
    root, cfg = world
    before = keys(root, cfg)
    same_size_rewrite(root / changed)
    after = keys(root, cfg)
    assert {s for s in before if before[s] != after[s]} == stages


def test_verify_sees_a_change_that_the_stat_cache_cannot(world, monkeypatch):
    """Bytes changed with every timestamp the cache keys on kept as they were (a file system that does
    not update ctime, a restore tool): only ``lift --verify`` rereads, and the key changes."""
    from lift_core import hash_cache

    root, cfg = world
    monkeypatch.setattr(hash_cache, "RACY_WINDOW_NS", -10**12)
    before = keys(root, cfg)
    weights = str(root / "C" / "adapter" / "adapter_model.safetensors")
    stale = hash_cache._local_version(weights)[0]
    same_size_rewrite(Path(weights))
    monkeypatch.setattr(hash_cache, "_local_version", lambda p, real=hash_cache._local_version:
                        (stale, real(p)[1]) if p == weights else real(p))
    assert keys(root, cfg)["score"] == before["score"]  # the cache vouches for the old bytes
    monkeypatch.setenv(storage.VERIFY_ENV, "1")
    assert keys(root, cfg)["score"] != before["score"]


def test_critic_id_follows_adapter_and_base_bytes_whatever_their_size(world, monkeypatch):
    from lift_core.critic import backbone

    root, _ = world
    base, adapter = str(root / "critic-base"), str(root / "C" / "adapter")
    first = backbone.critic_id(base, adapter)
    write_adapter(root / "C" / "adapter", 0.5)  # retrained: same shapes, other values
    retrained = backbone.critic_id(base, adapter)
    assert retrained != first
    monkeypatch.setattr(backbone, "_HASH_LIMIT", 0)  # a base too big to stream: hashed per file, cached
    big = backbone.critic_id(base, adapter)
    same_size_rewrite(root / "critic-base" / "model.safetensors")
    assert backbone.critic_id(base, adapter) != big


def test_base_fingerprint_by_kind_of_reference(tmp_path):
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w1")
    fp = base_fingerprint(str(folder), built_from_settings=False, catalog="", run_root="", kind="critic")
    same_size_rewrite(folder / "model.safetensors")
    assert base_fingerprint(str(folder), built_from_settings=False, catalog="", run_root="", kind="critic") != fp
    # Built from the config's settings: the same before and after the build exists (the settings are keyed).
    built = base_fingerprint("{run_root}/models/x", built_from_settings=True, catalog="", run_root=str(tmp_path),
                             kind="critic")
    (tmp_path / "models" / "x").mkdir(parents=True)
    (tmp_path / "models" / "x" / "config.json").write_text("{}")
    assert base_fingerprint("{run_root}/models/x", built_from_settings=True, catalog="", run_root=str(tmp_path),
                            kind="critic") == built
    hub = base_fingerprint("Qwen/Qwen2-VL-2B-Instruct", built_from_settings=False, catalog="", run_root="", kind="critic")
    assert hub != base_fingerprint("Qwen/Qwen2-VL-7B-Instruct", built_from_settings=False, catalog="", run_root="",
                                   kind="critic")
    # A catalog model: the sha256s its catalog declares (checked on load), not the reference's name.
    catalog = tmp_path / "catalog.yaml"

    def declare(sha: str) -> str:
        catalog.write_text(yaml.safe_dump({"models": {"m": {"path": "base", "kind": "critic",
                                                            "files": {"model.safetensors": sha}}}}))
        return base_fingerprint("catalog:m", built_from_settings=False, catalog=str(catalog), run_root="", kind="critic")

    assert declare("a" * 64) != declare("b" * 64)
