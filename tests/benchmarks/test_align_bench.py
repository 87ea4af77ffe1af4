"""Smoke test: benchmarks/align_step.py at its smallest scale writes a result of the benchmark convention."""

from __future__ import annotations

import json

import pytest


def test_align_step_benchmark_smallest_scale(benchmark_module, tmp_path):
    bench = benchmark_module("align_step")
    result = bench.main(["--height", "32", "--width", "32", "--frames", "9", "--batch", "1", "--videos", "2",
                         "--steps", "2", "--threads", "1", "--out-dir", str(tmp_path)])
    written = json.loads((tmp_path / "align_step.json").read_text())
    assert written == result
    assert set(written) == {"name", "machine", "figures", "ratio", "ratio_means", "command"}
    assert written["name"] == "align_step" and set(written["machine"]) == {"cpus", "gpu"}
    f = written["figures"]
    assert len(f["cached_step_s"]) == len(f["lift_way_step_s"]) == 2
    assert written["ratio"] == pytest.approx(f["lift_way_step_s_median"] / f["cached_step_s_median"], rel=1e-2)
    assert written["ratio"] > 0
    assert "--frames 9" in written["command"]
    assert "Ratio" in (tmp_path / "align_step.md").read_text()
