"""Every command with ``--out``: an output that would land in the wrong place or destroy an input is
refused before any work (exit 2, one line naming both paths), and the inputs are left byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file


@pytest.fixture
def inputs(tmp_path, fixtures_dir):
    """A manifest with its quarantine, a LiFT JSON, a videos folder, a sound adapter and a config."""
    root = tmp_path / "in"
    (root / "videos").mkdir(parents=True)
    for name in ("0.mp4", "1.mp4"):
        (root / "videos" / name).write_bytes((fixtures_dir / "lift-demo" / name).read_bytes())
    (root / "videos" / "captions.json").write_text(json.dumps({"0.mp4": "a crane", "1.mp4": "a panda"}))
    pq.write_table(pa.table({"video_id": ["v0"], "uri": [str(root / "videos" / "0.mp4")], "caption": ["a crane"]}),
                   root / "m.parquet")
    pq.write_table(pa.table({"uri": ["x"], "error": ["kept"]}), root / "m.quarantine.parquet")
    (root / "test.json").write_bytes((fixtures_dir / "lift-demo" / "test.json").read_bytes())
    (root / "adapter").mkdir()
    (root / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    save_file({"w": torch.ones(2, 2)}, str(root / "adapter" / "adapter_model.safetensors"))
    (root / "frames").mkdir()
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(lift_cli, root: Path, *args: str, match: str) -> str:
    before = snapshot(root)
    code, out, err = lift_cli(*args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("lift: error:") and match in lines[0], err
    assert snapshot(root) == before  # nothing written over, into or beside an input
    return lines[0]


def test_score_refuses_an_out_that_is_a_folder(lift_cli, inputs, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    refused(lift_cli, inputs, "score", "--videos", str(inputs / "m.parquet"), "--critic", str(inputs / "adapter"),
            "--out", str(out), "--work-dir", str(tmp_path / "wd"), match="is a folder")
    assert list(out.iterdir()) == [] and not (tmp_path / "wd").exists()  # no hidden temp file, no work


@pytest.mark.parametrize("out, fmt, match", [
    ("m.parquet", "parquet", "is the input --videos"),  # the manifest itself
    ("m.json", "lift-json", "is the input --videos's quarantine"),  # its quarantine sidecar, beside a new file
    ("m.quarantine.parquet", "parquet", "is the input --videos's quarantine"),
    ("adapter/scores.parquet", "parquet", "inside the input folder --critic"),
    ("link.parquet", "parquet", "is the input --videos"),  # a symlink to the manifest
])
def test_score_refuses_an_out_that_would_overwrite_or_change_an_input(lift_cli, inputs, tmp_path, out, fmt, match):
    (inputs / "link.parquet").symlink_to(inputs / "m.parquet")
    refused(lift_cli, inputs, "score", "--videos", str(inputs / "m.parquet"), "--critic", str(inputs / "adapter"),
            "--out", str(inputs / out), "--format", fmt, "--work-dir", str(tmp_path / "wd"), match=match)
    assert not (tmp_path / "wd").exists()


def test_score_refuses_an_out_inside_a_videos_folder(lift_cli, inputs, tmp_path):
    refused(lift_cli, inputs, "score", "--videos", str(inputs / "videos"), "--critic", str(inputs / "adapter"),
            "--out", str(inputs / "videos" / "scores.parquet"), "--work-dir", str(tmp_path / "wd"),
            match="inside the input folder --videos")


def test_score_refuses_a_truncated_adapter_before_decoding(lift_cli, inputs, tmp_path):
    weights = inputs / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3])
    line = refused(lift_cli, inputs, "score", "--videos", str(inputs / "test.json"), "--critic", str(inputs / "adapter"),
                   "--out", str(tmp_path / "s.parquet"), "--work-dir", str(tmp_path / "wd"), match="truncated")
    assert str(weights) in line and not (tmp_path / "wd").exists()


@pytest.mark.parametrize("out, match", [
    ("test.json", "is the input --source"),
    ("videos", "is a folder"),
])
def test_ingest_refuses_bad_outs(lift_cli, inputs, out, match):
    refused(lift_cli, inputs, "ingest", "--format", "lift-inference", "--source", str(inputs / "test.json"),
            "--out", str(inputs / out), match=match)


def test_ingest_refuses_an_out_inside_the_source_folder(lift_cli, inputs):
    refused(lift_cli, inputs, "ingest", "--format", "video-dir", "--source", str(inputs / "videos"),
            "--out", str(inputs / "videos" / "manifest.parquet"), match="inside the input folder --source")


def test_ingest_writes_the_file_it_reports(lift_cli, inputs, tmp_path):
    out = tmp_path / "out" / "manifest.parquet"
    code, stdout, err = lift_cli("ingest", "--format", "lift-inference", "--source", str(inputs / "test.json"),
                                 "--out", str(out))
    assert code == 0, err
    assert json.loads(stdout[stdout.index("{"):])["out"] == str(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.parquet", "manifest.quarantine.parquet"]


@pytest.mark.parametrize("manifest, out, match", [
    ("m.parquet", "m.parquet", "is a file"),
    ("frames/m.parquet", ".", "input --manifest .* is inside --out's frames/"),
    ("quarantine.parquet", ".", "--out's quarantine .* is the input --manifest"),
])
def test_decode_refuses_an_out_that_would_destroy_its_manifest(lift_cli, inputs, manifest, out, match):
    import re

    if manifest != "m.parquet":
        (inputs / manifest).write_bytes((inputs / "m.parquet").read_bytes())
    before = snapshot(inputs)
    code, _, err = lift_cli("decode", "--manifest", str(inputs / manifest), "--out", str(inputs / out))
    assert code == 2 and re.search(match, err), err
    assert snapshot(inputs) == before


def test_synth_refuses_an_out_that_is_a_file(lift_cli, inputs):
    refused(lift_cli, inputs, "synth", "--out", str(inputs / "m.parquet"), "--n", "2", match="is a file")


def test_import_scores_refuses_its_own_input_as_out(lift_cli, inputs, fixtures_dir):
    src = inputs / "critic_output.json"
    src.write_bytes((fixtures_dir / "lift-demo" / "critic_output_13b.json").read_bytes())
    refused(lift_cli, inputs, "import-scores", str(src), "--format", "critic-output", "--out", str(src),
            match="is the input FILE")


def test_train_critic_refuses_an_out_whose_adapter_folder_holds_an_input(lift_cli, inputs, tmp_path):
    critic = tmp_path / "C"
    (critic / "adapter").mkdir(parents=True)
    (critic / "adapter" / "m.parquet").write_bytes((inputs / "m.parquet").read_bytes())
    before = snapshot(critic)
    code, _, err = lift_cli("train-critic", "--config", "configs/demo.yaml", "--manifest",
                            str(critic / "adapter" / "m.parquet"), "--frames", str(inputs / "frames"),
                            "--out", str(critic))
    assert code == 2 and "inside --out's adapter/" in err, err
    assert snapshot(critic) == before
