"""The reward-selection analysis on a training set whose right and wrong videos are known: rendered clips,
half of each prompt's samples drawn in the wrong colour, read by the real pixel oracle."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from lift_core import storage
from lift_core.t2v.align_stage import SAMPLES_SCHEMA
from lift_core.video.io import write_mp4
from lift_core.video.synth import SynthSpec, caption_text, render

PROMPTS = [("two", "red", "circle", "left"), ("one", "blue", "square", "up"), ("three", "green", "triangle", "down")]


def _training_set(root, reward_of_right: float, reward_of_wrong: float) -> str:
    """An align output folder: per prompt two videos as captioned and two in another colour, plus one real."""
    rows = []
    for p, (count, colour, shape, direction) in enumerate(PROMPTS):
        for k in range(4):
            shown = colour if k < 2 else ("yellow" if colour != "yellow" else "red")
            spec = SynthSpec(shown, shape, count, direction, "smooth", "clean", colour, shape, count)
            uri = write_mp4(str(root / f"p{p}-{k}.mp4"), render(spec, 32, 32, 9, seed=10 * p + k))
            reward = reward_of_right if k < 2 else reward_of_wrong
            rows.append({"video_id": f"p{p}-{k}", "uri": uri, "caption": caption_text(count, colour, shape, direction),
                         "source": "generated", "critic_id": "c", "reward": reward, "weight": reward})
    real = SynthSpec("red", "circle", "one", "right", "smooth", "clean", "red", "circle", "one")
    rows.append({"video_id": "real", "uri": write_mp4(str(root / "real.mp4"), render(real, 32, 32, 9, seed=99)),
                 "caption": caption_text("one", "red", "circle", "right"), "source": "hd-vila", "critic_id": "c",
                 "reward": 0.5, "weight": 0.5})
    storage.write_table(str(root / "samples.parquet"), pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA))
    return str(root)


@pytest.mark.parametrize("right, wrong, sign", [(0.9, 0.1, 1), (0.1, 0.9, -1)])
def test_a_reward_that_tracks_the_oracle_selects_and_one_that_opposes_it_deselects(benchmark_module, tmp_path,
                                                                                   right, wrong, sign):
    bench = benchmark_module("reward_selection")
    (tmp_path / "align").mkdir()
    samples = _training_set(tmp_path / "align", right, wrong)
    result = bench.main(["--samples", samples, "--out-dir", str(tmp_path / "out")])
    assert json.loads((tmp_path / "out" / "reward_selection.json").read_text()) == json.loads(json.dumps(result))
    f = result["figures"]
    assert f["videos"] == {"generated": 12, "real": 1, "unreadable_by_oracle": 0, "prompts": 3}
    # The oracle reads the wrong colour: 3 of 4 attributes right (0.75) against 1.0.
    assert f["oracle"]["by_attribute"]["colour"] == pytest.approx(0.5)
    assert f["oracle"]["share_of_prompts_whose_samples_differ"] == 1.0
    assert sign * f["correlation"]["within_prompt"] > 0.8  # the oracle reads colour; shape is misread now and then
    w = f["weightings"]
    assert w["uniform"]["selection_gain"] == 0 and w["uniform"]["mean_weight"] == 1
    assert w["oracle"]["selection_gain"] > 0
    gain = w["reward"]["selection_gain"]
    assert sign * gain > 0 and sign * w["reward"]["selection_gain_ci"][0] > 0
    by_attribute = w["reward"]["selection_gain_by_attribute"]
    assert sign * by_attribute["colour"] > 0.2 and by_attribute["count"] == by_attribute["direction"] == 0
    assert result["ratio"] == pytest.approx(gain / w["oracle"]["selection_gain"], abs=1e-4)
    assert w["reward"]["real_weight_share"] == pytest.approx(0.5 / (6 * right + 6 * wrong + 0.5))
    assert "selection gain" in (tmp_path / "out" / "reward_selection.md").read_text()


def test_an_empty_training_set_is_refused(benchmark_module, tmp_path):
    bench = benchmark_module("reward_selection")
    storage.write_table(str(tmp_path / "samples.parquet"), pa.Table.from_pylist([], schema=SAMPLES_SCHEMA))
    with pytest.raises(ValueError, match="no training rows"):
        bench.main(["--samples", str(tmp_path), "--out-dir", str(tmp_path / "out")])


def test_without_samples_it_reads_the_newest_finished_alignment_of_the_run_root(benchmark_module, tmp_path):
    import os

    bench = benchmark_module("reward_selection")
    with pytest.raises(SystemExit, match="no finished align stage under .*run `make demo` first"):
        bench.newest_align_output(str(tmp_path))
    for i, key in enumerate(("old", "new", "unfinished")):
        (tmp_path / "align" / key).mkdir(parents=True)
        if key != "unfinished":
            (tmp_path / "align" / key / "_SUCCESS.json").write_text("{}")
            os.utime(tmp_path / "align" / key / "_SUCCESS.json", (1000 + i, 1000 + i))
    assert bench.newest_align_output(str(tmp_path)) == str(tmp_path / "align" / "new")
