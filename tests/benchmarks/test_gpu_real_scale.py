"""Smoke test: benchmarks/gpu_real_scale.py --tiny runs every measurement on CPU and writes a result of the
benchmark convention (its figures are not asserted: they are not measurements). Without a GPU and without
--tiny the script stops at once with one line."""

from __future__ import annotations

import json

import pytest

SECTIONS = ("critic_scoring", "vae_encode", "align_lora", "align_full", "generation")


@pytest.mark.slow
def test_gpu_real_scale_tiny_runs_every_measurement(benchmark_module, tmp_path):
    bench = benchmark_module("gpu_real_scale")
    out = tmp_path / "results"
    result = bench.main(["--tiny", "--threads", "2", "--work", str(tmp_path / "work"), "--out-dir", str(out)])

    written = json.loads((out / "gpu_real_scale.json").read_text())
    assert written == result
    assert set(written) == {"name", "machine", "figures", "ratio", "ratio_means", "command"}
    assert written["name"] == "gpu_real_scale" and set(written["machine"]) == {"cpus", "gpu"}
    assert "--tiny" in written["command"]
    f = written["figures"]
    assert bench.errors(written) == [], bench.errors(written)
    assert f["scale"].startswith("tiny") and f["settings"]["device"] == "cpu"

    critic = f["critic_scoring"]
    assert critic["frames"] == 8 and critic["label_only"]["videos_per_s"] > 0
    assert critic["with_rationale"]["videos_per_s"] > 0 and critic["probabilities_sum_to_1"]
    assert critic["llm_layers"] == 1 and critic["vision_blocks"] == 1 and critic["adapter_params"] > 0

    vae = f["vae_encode"]
    assert vae["tiling"] and vae["slicing"] and vae["tiled_encode_ran"]  # the tiled path really ran
    assert vae["latent_dist_shape"] == [32, 3, 6, 6] and vae["s_per_clip"] > 0  # mean | logvar, 9 -> 3 frames

    lora, full = f["align_lora"], f["align_full"]
    for a in (lora, full):
        assert a["gradient_checkpointing"] and a["mixed_precision"] == "bf16"
        assert a["trainable_dtypes"] == ["float32"] and a["losses_finite"] and a["grad_norm_last"] > 0
        assert 0 < a["trainable_params"] < a["transformer_params"] and a["step_s"] > 0
        assert a["latents"] == [16, 3, 6, 6] and a["peak_gib"] is None  # peak memory is a CUDA figure
    assert lora["mode"] == "lora" and "r128" in lora["trains"] and lora["profile"].endswith("-1gpu.yaml")
    assert full["mode"] == "full" and "transformer_blocks" in full["trains"]  # LiFT's full fine-tune

    gen = f["generation"]
    assert gen["frames_shape"] == [1, 9, 48, 48, 3] and gen["steps"] == 2 and gen["s_per_video"] > 0
    assert gen["vae_tiling"] and gen["vae_slicing"]

    assert written["ratio"] is None and "21.564" in written["ratio_means"]  # no GPU: no memory ratio
    md = (out / "gpu_real_scale.md").read_text()
    assert "--tiny smoke run on CPU" in md and "21.564" in md and "CogVideo/issues/579" in md


def test_gpu_real_scale_without_a_gpu_stops_with_one_line(benchmark_module, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: run `python benchmarks/gpu_real_scale.py` itself")
    bench = benchmark_module("gpu_real_scale")
    with pytest.raises(SystemExit) as stop:
        bench.main(["--out-dir", str(tmp_path / "out")])
    message = str(stop.value.code)
    assert "no CUDA GPU" in message and "--tiny" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_gpu_real_scale_tiny_never_writes_into_the_results(benchmark_module):
    bench = benchmark_module("gpu_real_scale")
    with pytest.raises(SystemExit, match="smoke test"):
        bench.main(["--tiny", "--out-dir", str(bench.RESULTS)])
