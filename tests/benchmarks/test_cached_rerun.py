"""Smoke test: the cached-rerun benchmark runs end to end at its smallest scale (the ratio is not asserted,
only that the rerun was all cache hits, which the benchmark itself checks)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two whole `lift run`s: about 5 minutes on 2 idle cores, more on a busy machine
def test_cached_rerun_benchmark_smallest_scale(benchmark_module, tmp_path):
    bench = benchmark_module("cached_rerun")
    out = tmp_path / "results"
    result = bench.main(["--scale", "tiny", "--code", "worktree", "--work", str(tmp_path / "work"),
                         "--timeout", "840", "--out-dir", str(out)])
    written = json.loads((out / "cached_rerun.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert set(written) == {"name", "machine", "figures", "ratio", "ratio_means", "command"}
    f = written["figures"]
    assert f["scale"] == "tiny" and f["overrides"] == bench.TINY and f["code"] == "worktree"
    assert f["first_run"]["tasks"] == f["second_run"]["tasks"] == f["second_run"]["cache_hits"] == 9
    assert f["first_run"]["cache_hits"] == 0
    assert written["ratio"] == pytest.approx(f["second_run"]["seconds"] / f["first_run"]["seconds"], abs=1e-4)
    assert 0 < written["ratio"] < 1
    md = (out / "cached_rerun.md").read_text()
    assert "Scale: **tiny**" in md and "Ratio:" in md
    assert not list((tmp_path / "work").iterdir())  # the run root and logs are removed without --keep
