"""The VLM probe: its reader tells what needs the tokens' places, and the benchmark runs on the shipped VLM."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_only_the_reader_with_places_reads_an_attribute_carried_by_where_a_token_is(benchmark_module):
    """Every clip has the same four tokens in another order: the label is where the marked one sits."""
    import torch

    bench = benchmark_module("vlm_probe")
    rng = np.random.RandomState(0)
    n, n_tok, width = 384, 4, 32
    plain, marked = rng.standard_normal(width), rng.standard_normal(width)
    where = rng.randint(n_tok, size=n)
    tokens = np.tile(plain, (n, n_tok, 1))
    tokens[np.arange(n), where] = marked
    labels = np.zeros((n, len(bench.ATTRIBUTES)), dtype=int)
    labels[:, bench.ATTRIBUTES.index("direction")] = where
    classes = [len(v) for v in bench.attribute_values().values()]
    tokens, shown = torch.as_tensor(tokens, dtype=torch.float32), np.ones(n, dtype=bool)
    train, test = slice(0, 256), slice(256, n)
    acc = {}
    for places in (True, False):
        reader = bench.train_reader(tokens[train], labels[train], classes, places, 300, 0, shown[train])
        acc[places] = bench.reader_accuracy(reader, tokens[test], labels[test], shown[test])["direction"]
    assert acc[True] >= 0.9 and acc[False] <= 0.5, acc


@pytest.mark.slow
def test_vlm_probe_on_the_shipped_vlm_smallest_scale(benchmark_module, tmp_path):
    bench = benchmark_module("vlm_probe")
    result = bench.main(["--train-clips", "96", "--eval-clips", "48", "--steps", "80", "--answer-clips", "8",
                         "--out-dir", str(tmp_path)])
    written = json.loads((tmp_path / "vlm_probe.json").read_text())
    assert written == json.loads(json.dumps(result))
    f = written["figures"]
    assert f["model"] == "catalog:lift-demo-vlm" and f["tokens_per_clip"] == 16  # 8 frames of 56 px: 4 x 2 x 2
    for reader in ("reader_with_places", "reader_without_places"):
        assert set(f[reader]) == set(bench.ATTRIBUTES) and all(0 <= v <= 1 for v in f[reader].values())
        assert f[reader]["colour"] >= 0.7 > 2 * f["chance"]["colour"]  # every base's tokens carry colour
    assert f["answers"]["colour"] >= 0.75  # the shipped VLM names colours (its build record: 1.0)
    carried = np.mean([f["reader_with_places"][a] for a in bench.READ])
    assert written["ratio"] == pytest.approx(np.mean([f["answers"][a] for a in bench.READ]) / carried, abs=1e-4)
    md = (tmp_path / "vlm_probe.md").read_text()
    assert "| direction |" in md and "Ratio" in md
