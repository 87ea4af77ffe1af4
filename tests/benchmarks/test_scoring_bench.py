"""Smoke test: the scoring benchmark runs end to end at its smallest scale (figures are not asserted)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_scoring_benchmark_smallest_scale(benchmark_module, tmp_path):
    bench = benchmark_module("scoring")
    out = tmp_path / "results"
    bench.main(["--videos", "2", "--lift-512-videos", "1", "--lift-max-new-tokens", "6", "--max-new-tokens", "2",
                "--mem-small", "2", "--mem-large", "4", "--batch-size", "2", "--repeats", "1",
                "--work", str(tmp_path / "work"), "--out-dir", str(out)])
    result = json.loads((out / "scoring.json").read_text())
    assert set(result) == {"name", "machine", "figures", "ratio", "ratio_means", "ratio_512", "ratio_512_means", "command"}
    f = result["figures"]
    assert f["memory_small"]["videos"] == 2 and f["memory_large"]["videos"] == 4
    assert result["ratio"] == f["speedup_no_rationale"] > 0
    assert result["ratio_512"] == f["speedup_no_rationale_512"] > 0 and "UPPER BOUND" in result["ratio_512_means"]
    # LiFT's way generates the median length of LiFT's 12 real answers (our tokenizer), exactly.
    lengths = f["lift_answer_token_lengths"]
    assert len(lengths) == 12 and min(lengths) <= f["lift_answer_tokens"] <= max(lengths)
    assert f["lift_way"]["mean_generated_tokens"] == f["lift_answer_tokens"]
    assert f["lift_way_512"]["mean_generated_tokens"] == 6 and f["lift_way_512"]["videos"] == 1
    md = (out / "scoring.md").read_text()
    assert "| LiFT" in md and "upper bound" in md.lower()


def test_scoring_benchmark_gpu_mode_is_selectable(benchmark_module, tmp_path):
    """``--device cuda`` is a real option; without a GPU it stops at once with one line (not a traceback)."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: run `python benchmarks/scoring.py --device cuda` itself")
    bench = benchmark_module("scoring")
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench.main(["--device", "cuda", "--work", str(tmp_path / "work"), "--out-dir", str(tmp_path / "out")])
