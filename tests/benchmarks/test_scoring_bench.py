"""Smoke test: the scoring benchmark runs end to end at its smallest scale (figures are not asserted)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_scoring_benchmark_smallest_scale(benchmark_module, tmp_path):
    bench = benchmark_module("scoring")
    out = tmp_path / "results"
    bench.main(["--videos", "1", "--lift-max-new-tokens", "4", "--max-new-tokens", "2", "--mem-small", "2",
                "--mem-large", "4", "--batch-size", "2", "--repeats", "1", "--work", str(tmp_path / "work"), "--out-dir", str(out)])
    result = json.loads((out / "scoring.json").read_text())
    assert set(result) == {"name", "machine", "figures", "ratio", "ratio_means", "command"}
    f = result["figures"]
    assert f["memory_small"]["videos"] == 2 and f["memory_large"]["videos"] == 4
    assert result["ratio"] == f["speedup_no_rationale"] > 0
    assert "| LiFT" in (out / "scoring.md").read_text()
