"""The demo's shipped bases: declared in the catalog with sha256 and build record, checked at load,
in step with the code that builds them, and replaced by a build of its own where a config asks for other
build settings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from lift_core import shipped
from lift_core.config import load_config
from lift_core.demo_models import MARKER, MODELS, wanted_records

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "data_catalog" / "catalog.yaml"
DEMO = REPO / "configs" / "demo.yaml"


def test_both_demo_bases_are_shipped_and_the_demo_uses_them():
    entries = shipped.load_entries(CATALOG)
    assert set(entries) >= set(MODELS)
    cfg = load_config(DEMO)
    assert cfg.critic.model == "catalog:lift-demo-vlm" and cfg.t2v.model == "catalog:lift-demo-t2v"
    total = 0
    for name, kind in MODELS.items():
        e = entries[name]
        assert e.kind == kind and any(f.endswith(".safetensors") for f in e.files)
        record = e.record
        for key in ("config", "recipe_fingerprint", "steps", "seeds", "wall_time_s", "figures"):
            assert key in record, f"{name}: build record lacks {key}"
        total += sum(os.path.getsize(os.path.join(e.path, f)) for f in e.files)
    assert total <= 40 * 2 ** 20, f"shipped checkpoints take {total / 2 ** 20:.1f} MiB, over 40"


def test_shipped_build_records_match_the_code_that_builds_them():
    """A change to the demo's build settings or to the build recipes needs the bases rebuilt."""
    entries = shipped.load_entries(CATALOG)
    for name, want in wanted_records(load_config(DEMO)).items():
        got = entries[name].record
        assert got.get("config") == want["config"], (
            f"{name}: configs/demo.yaml's build settings differ from the shipped build record; rebuild the "
            f"demo bases with `{shipped.REBUILD_COMMAND}` and commit data_catalog/")
        assert got.get("recipe_fingerprint") == want["recipe_fingerprint"], (
            f"{name}: the build recipe code changed since the shipped base was built (fingerprint "
            f"{got.get('recipe_fingerprint')} != {want['recipe_fingerprint']}); rebuild with "
            f"`{shipped.REBUILD_COMMAND}` and commit data_catalog/")


def test_shipped_files_match_their_sha256_and_load_through_from_pretrained():
    from lift_core.critic.backbone import load_critic
    from lift_core.t2v.spec import get_spec

    entries = shipped.load_entries(CATALOG)
    critic = load_critic(shipped.verified_dir(entries["lift-demo-vlm"]), device="cpu", frame_size=(56, 56))
    assert set(critic.label_token_ids) == {"Good", "Normal", "Bad"}
    pipe = get_spec("cogvideox").load_pipeline(shipped.verified_dir(entries["lift-demo-t2v"]))
    assert pipe.vae.config.scaling_factor > 0


def _copy_catalog(tmp_path: Path, names=tuple(MODELS)) -> Path:
    """A catalog of its own holding copies of the shipped models (tests may break them)."""
    raw = yaml.safe_load(CATALOG.read_text())
    models = {n: raw["models"][n] for n in names}
    for n in names:
        shutil.copytree(CATALOG.parent / models[n]["path"], tmp_path / models[n]["path"])
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"datasets": {}, "models": models}))
    return path


def test_a_shipped_file_whose_sha256_does_not_match_is_refused_naming_it(tmp_path):
    from lift_core.critic.builder import ensure_critic_base

    catalog = _copy_catalog(tmp_path, ["lift-demo-vlm"])
    weights = next((tmp_path / "models" / "lift-demo-vlm").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    cfg = load_config(DEMO, [f"run_root={tmp_path}/run", f"data.catalog={catalog}"])
    with pytest.raises(shipped.ShippedModelError, match=weights.name) as err:
        ensure_critic_base(cfg)
    assert "sha256" in str(err.value) and shipped.REBUILD_COMMAND in str(err.value)
    weights.unlink()
    with pytest.raises(shipped.ShippedModelError, match="missing"):
        ensure_critic_base(cfg)


def test_unknown_catalog_model_and_wrong_kind_are_clear_errors(tmp_path):
    with pytest.raises(shipped.ShippedModelError, match="no model 'nope'"):
        shipped.entry("catalog:nope", CATALOG, "critic")
    with pytest.raises(shipped.ShippedModelError, match="not a critic model"):
        shipped.entry("catalog:lift-demo-t2v", CATALOG, "critic")


def test_a_config_with_other_build_settings_builds_its_own(tmp_path, caplog):
    """Never a stale base in silence: other build settings than the record's build into build_dir."""
    from lift_core.critic.builder import built_record, ensure_critic_base

    cfg = load_config(DEMO, [f"run_root={tmp_path}", "critic.pretrain=null", "critic.build_tiny.hidden_size=64",
                             "critic.build_tiny.intermediate_size=128", "critic.build_tiny.num_hidden_layers=1",
                             "critic.build_tiny.vision_depth=1", "critic.build_tiny.vision_embed_dim=32"])
    with caplog.at_level("WARNING", logger="lift.models"):
        got = ensure_critic_base(cfg)
    assert got == os.path.abspath(f"{tmp_path}/models/critic-base")
    assert built_record(got)["config"]["hidden_size"] == 64
    assert "differ from those of the shipped lift-demo-vlm" in caplog.text
    # Without build settings, the catalog model is used as it is.
    plain = load_config(DEMO, [f"run_root={tmp_path}", "critic.pretrain=null", "critic.build_tiny=null"])
    assert ensure_critic_base(plain) == shipped.load_entries(CATALOG)["lift-demo-vlm"].path


def test_build_demo_models_builds_both_bases_for_a_few_steps_and_declares_them(tmp_path, ray_address):
    """The build recipes run end to end at a few steps: models next to the catalog, sha256 and record in it."""
    from lift_core.demo_models import build_demo_models

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("# my catalog\ndatasets: {}\n")
    cfg = load_config(DEMO, [
        f"run_root={tmp_path}/run", f"data.catalog={catalog}", f"ray.address={ray_address}",
        "critic.build_tiny.hidden_size=64", "critic.build_tiny.intermediate_size=128",
        "critic.build_tiny.num_hidden_layers=1", "critic.build_tiny.vision_depth=1",
        "critic.build_tiny.vision_embed_dim=32", "critic.pretrain.train.max_steps=3",
        "critic.pretrain.train.batch_size=4", "critic.pretrain.train.warmup_steps=1", "critic.pretrain.eval_clips=8",
        "t2v.build_tiny.num_layers=1", "t2v.build_tiny.attention_head_dim=8", "t2v.build_tiny.time_embed_dim=2",
        "t2v.build_tiny.vae_block_out_channels=[8, 8, 8]", "t2v.build_tiny.latent_channels=4",
        "t2v.build_tiny.vae_norm_groups=2",
        "t2v.pretrain.vae.max_steps=2", "t2v.pretrain.vae.batch_size=2", "t2v.pretrain.vae.warmup_steps=1",
        "t2v.pretrain.denoiser.max_steps=2", "t2v.pretrain.denoiser.batch_size=2",
        "t2v.pretrain.denoiser.warmup_steps=1", "t2v.pretrain.scaling_clips=4",
    ])
    built = build_demo_models(cfg)
    text = catalog.read_text()
    assert text.startswith("# my catalog\ndatasets: {}\n") and MARKER in text  # the rest of the file is kept
    entries = shipped.load_entries(catalog)
    want = wanted_records(cfg)
    for name in MODELS:
        e = entries[name]
        assert shipped.verified_dir(e) == str((tmp_path / "models" / name).resolve())
        assert e.record["config"] == want[name]["config"] == built[name]["record"]["config"]
        assert e.record["wall_time_s"] > 0
    vlm = entries["lift-demo-vlm"].record
    assert vlm["steps"] == {"pretrain": 3}
    assert set(vlm["figures"]["held_apart_accuracy"]) >= {"describe", "appearance", "motion", "match"}
    t2v = entries["lift-demo-t2v"].record
    assert set(t2v["figures"]["vae_reconstruction"]) == {"colour", "shape", "count", "direction", "overall"}
    # The demo config with this catalog now resolves to the built models, after checking their sha256.
    from lift_core.critic.builder import ensure_critic_base
    from lift_core.t2v.builder import ensure_t2v_base

    assert ensure_critic_base(cfg) == entries["lift-demo-vlm"].path
    assert ensure_t2v_base(cfg) == entries["lift-demo-t2v"].path
