"""Smoke test: benchmarks/decode.py at its smallest scale writes a result of the benchmark convention."""

from __future__ import annotations

import json

import pytest

from lift_core.video.io import HAS_DECORD


@pytest.mark.skipif(not HAS_DECORD, reason="the limit is bare decord; decord has x86_64 Linux wheels only")
def test_decode_benchmark_smallest_scale(benchmark_module, ray_session, tmp_path):
    bench = benchmark_module("decode")
    result = bench.main(["--videos", "4", "--repeats", "1", "--frames", "4", "--height", "56", "--width", "56",
                         "--batch-size", "2", "--procs", "2", "--out-dir", str(tmp_path)])
    written = json.loads((tmp_path / "decode.json").read_text())
    assert written == result
    assert set(written) == {"name", "machine", "figures", "ratio", "ratio_means", "command"}
    assert written["name"] == "decode" and set(written["machine"]) == {"cpus", "gpu"}
    assert written["ratio"] > 0 and written["figures"]["videos"] == 4
    assert "--videos 4" in written["command"]
    assert "Ratio" in (tmp_path / "decode.md").read_text()
