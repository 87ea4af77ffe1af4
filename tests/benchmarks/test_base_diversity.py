"""The base-diversity benchmark: its figures on hand-made rows with answers worked out by hand, its choice
rule, and a smoke run at its smallest scale (the shipped demo T2V, 2 captions, 2 seeds, 1 and 2 sampling
steps) whose published figures are recomputed by hand from the rows it published."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lift_core.config import load_config
from lift_core.metrics.oracle import ATTRIBUTES, parse_caption
from lift_core.t2v.generate import prompt_seed
from lift_core.video import synth


@pytest.fixture
def bench(benchmark_module):
    return benchmark_module("base_diversity")


def hand_row(caption: str, index: int, colour: int, shape: int, count: int, direction: int) -> dict:
    vals = {"colour": colour, "shape": shape, "count": count, "direction": direction}
    return {"split": "val", "steps": 4, "caption": caption, "index": index, "seed": index,
            **{a: float(v) for a, v in vals.items()}, "overall": float(np.mean(list(vals.values())))}


# Caption A, 4 seeds: colour 1111 (all right), shape 0000 (all wrong), count 1000 (mixed), direction 0110 (mixed).
# Caption B, 4 seeds: colour 1010 (mixed), shape 0100 (mixed), count 1111 (all right), direction 1111 (all right).
A = [hand_row("a", 0, 1, 0, 1, 0), hand_row("a", 1, 1, 0, 0, 1), hand_row("a", 2, 1, 0, 0, 1), hand_row("a", 3, 1, 0, 0, 0)]
B = [hand_row("b", 0, 1, 0, 1, 1), hand_row("b", 1, 0, 1, 1, 1), hand_row("b", 2, 1, 0, 1, 1), hand_row("b", 3, 0, 0, 1, 1)]


def test_figures_on_hand_made_rows(bench):
    f = bench.figures(A + B)
    assert f["n_captions"] == 2 and f["seeds_per_caption"] == 4 and f["n_videos"] == 8
    # Diversity: A has 2 mixed cells of 4, B has 2 of 4 -> 4 / 8.
    assert f["diversity"]["overall"]["mean"] == pytest.approx(0.5)
    assert f["diversity"]["overall"]["all_right"] == pytest.approx(3 / 8)  # A colour, B count, B direction
    assert f["diversity"]["overall"]["all_wrong"] == pytest.approx(1 / 8)  # A shape
    assert f["diversity"]["colour"]["mean"] == pytest.approx(0.5)  # B only
    assert f["diversity"]["shape"]["mean"] == pytest.approx(0.5)  # B only
    assert f["diversity"]["count"]["mean"] == pytest.approx(0.5)  # A only
    assert f["diversity"]["direction"]["mean"] == pytest.approx(0.5)  # A only
    # Both captions have diversity 0.5, so every bootstrap resample does too.
    assert f["diversity"]["overall"]["ci"] == pytest.approx([0.5, 0.5])
    # Adherence: colour 6/8, shape 1/8, count 5/8, direction 6/8; overall their mean 18/32.
    assert f["adherence"]["colour"]["mean"] == pytest.approx(0.75)
    assert f["adherence"]["shape"]["mean"] == pytest.approx(0.125)
    assert f["adherence"]["count"]["mean"] == pytest.approx(0.625)
    assert f["adherence"]["direction"]["mean"] == pytest.approx(0.75)
    assert f["adherence"]["overall"]["mean"] == pytest.approx(18 / 32)
    # Over captions: A's overall is 7/16, B's 11/16, so the interval lies between them and holds both ends.
    lo, hi = f["adherence"]["overall"]["ci"]
    assert lo == pytest.approx(7 / 16) and hi == pytest.approx(11 / 16)


def test_figures_refuse_unequal_seed_counts(bench):
    with pytest.raises(ValueError, match="same number of seeds"):
        bench.figures(A + B[:3])


def test_choice_rule(bench):
    def fig(adh: float, div: float) -> dict:
        return {"adherence": {"overall": {"mean": adh}}, "diversity": {"overall": {"mean": div}}}

    # 16 steps is best, but 8 is within 0.01 of it and fewer steps; 4 lacks diversity.
    assert bench.choose({4: fig(0.70, 0.3), 8: fig(0.595, 0.5), 16: fig(0.60, 0.45)}) == 8
    # 8 falls 0.02 short of the best: 16.
    assert bench.choose({4: fig(0.50, 0.5), 8: fig(0.58, 0.5), 16: fig(0.60, 0.45)}) == 16
    # None reaches the required diversity: all settings compete on adherence.
    assert bench.choose({4: fig(0.70, 0.1), 8: fig(0.60, 0.2)}) == 4


def test_test_split_takes_one_setting(bench, tmp_path):
    with pytest.raises(SystemExit, match="exactly one"):
        bench.main(["--scale", "tiny", "--split", "test", "--sampling-steps", "1", "2", "--out-dir", str(tmp_path)])


@pytest.mark.timeout(300)
def test_smallest_scale_figures_match_the_rows(bench, tmp_path):
    out = tmp_path / "results"
    result = bench.main(["--scale", "tiny", "--split", "both", "--sampling-steps", "1", "2",
                         "--out-dir", str(out)])
    written = json.loads((out / "base_diversity.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert {"name", "machine", "figures", "ratio", "ratio_means", "command"} <= set(written)
    split_cfg = load_config(bench.REPO / bench.CONFIG).data.split
    rows = written["rows"]
    val = [r for r in rows if r["split"] == "val"]
    test = [r for r in rows if r["split"] == "test"]
    assert len(val) == 2 * 2 * 2 and len(test) == 2 * 2  # 2 settings x 2 captions x 2 seeds; test once

    # Prompts of the right split, seeds as documented, and each 0/1 the oracle's reading against the caption.
    for r in rows:
        assert synth.caption_split(r["caption"], split_cfg) == r["split"]
        assert r["seed"] == prompt_seed(bench.DEFAULT_BASE_SEED, r["caption"], r["index"])
        want = parse_caption(r["caption"])
        for a in ATTRIBUTES:
            assert r[a] == float(r["read"][a] == getattr(want, a)), (r, a)
        assert r["overall"] == pytest.approx(np.mean([r[a] for a in ATTRIBUTES]))
    assert all(synth.is_heldout(r["caption"], split_cfg) for r in test)

    def by_hand(group: list[dict]) -> tuple[float, float, dict]:
        """(adherence, diversity, per-attribute diversity) straight from the rows."""
        caps = sorted({r["caption"] for r in group})
        mixed = {a: [len({r[a] for r in group if r["caption"] == c}) == 2 for c in caps] for a in ATTRIBUTES}
        div = float(np.mean([m for a in ATTRIBUTES for m in mixed[a]]))
        return float(np.mean([r["overall"] for r in group])), div, {a: float(np.mean(mixed[a])) for a in ATTRIBUTES}

    v = written["validation"]
    assert sorted(v["by_steps"]) == ["1", "2"]
    for s, f in v["by_steps"].items():
        adh, div, div_attr = by_hand([r for r in val if r["steps"] == int(s)])
        assert f["adherence"]["overall"]["mean"] == pytest.approx(adh)
        assert f["diversity"]["overall"]["mean"] == pytest.approx(div)
        for a in ATTRIBUTES:
            assert f["diversity"][a]["mean"] == pytest.approx(div_attr[a])
        for a in ("overall", *ATTRIBUTES):
            lo, hi = f["diversity"][a]["ci"]
            assert lo <= f["diversity"][a]["mean"] <= hi

    # Each other setting against the chosen one, paired by (caption, seed index), and the reading counts.
    chosen = written["chosen_steps"]
    for s, d in v["vs_chosen"].items():
        mine = {(r["caption"], r["index"]): r["overall"] for r in val if r["steps"] == int(s)}
        theirs = {(r["caption"], r["index"]): r["overall"] for r in val if r["steps"] == chosen}
        assert d["delta"] == pytest.approx(np.mean([mine[key] - theirs[key] for key in theirs]))
    assert set(v["vs_chosen"]) == {"1", "2"} - {str(chosen)}
    for a in ATTRIBUTES:
        assert sum(written["test"]["readings"][a].values()) == len(test)
        assert written["test"]["readings"][a].get("none", 0) == sum(r["read"][a] is None for r in test)

    # The choice follows the stated rule on the validation figures, and the test split ran once at it.
    adh = {int(s): f["adherence"]["overall"]["mean"] for s, f in v["by_steps"].items()}
    div = {int(s): f["diversity"]["overall"]["mean"] for s, f in v["by_steps"].items()}
    eligible = [s for s in adh if div[s] >= 0.4] or list(adh)
    best = max(adh[s] for s in eligible)
    assert written["chosen_steps"] == min(s for s in eligible if adh[s] >= best - 0.01)
    assert {r["steps"] for r in test} == {written["chosen_steps"]} == {written["test"]["steps"]}
    t_adh, t_div, _ = by_hand(test)
    t = written["test"]["figures"]
    assert t["adherence"]["overall"]["mean"] == pytest.approx(t_adh)
    assert t["diversity"]["overall"]["mean"] == pytest.approx(t_div)
    assert written["acceptance"]["base_diversity"]["met"] == (t_div >= 0.4)
    assert written["ratio"] == pytest.approx(t_div / 0.4, abs=1e-4)

    md = (out / "base_diversity.md").read_text()
    assert "Scale: **tiny**" in md and f"**Chosen**: {written['chosen_steps']} sampling steps" in md
