"""The alignment-quality benchmark's pairing and pooling, on eval rows in the evaluate stage's real format
(``EVAL_SCHEMA``, written and read back as eval.parquet), with answers worked out by hand; and the fixed
keys of the JSON it publishes. The benchmark's 9 `lift run`s are not run here (too slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lift_core.domain import DIMENSIONS
from lift_core.metrics.oracle import ATTRIBUTES
from lift_core.t2v.evaluate import EVAL_SCHEMA, summarize
from lift_core.t2v.generate import prompt_seed

EVAL_SEED = 1234
# Base oracle adherence per (prompt, video index); the same in every arm, as the same base model makes it.
BASE = {("p0", 0): 0.25, ("p0", 1): 0.5, ("p1", 0): 0.5, ("p1", 1): 0.75}
# The reward-weighted arm's aligned adherence per align seed. Deltas over base: seed 0: +.25, 0, +.25, -.25;
# seed 1: +.25, +.25, 0, +.25. Pooled: mean delta 1.0 / 8 = 0.125; wins 5, ties 2, losses 1 -> (5 + 1) / 8 = 0.75.
REWARD = {0: {("p0", 0): 0.5, ("p0", 1): 0.5, ("p1", 0): 0.75, ("p1", 1): 0.5},
          1: {("p0", 0): 0.5, ("p0", 1): 0.75, ("p1", 0): 0.5, ("p1", 1): 1.0}}


def row(side: str, prompt: str, index: int, oracle: float, flicker: float) -> dict:
    """One eval row of EVAL_SCHEMA. The critic's reward is 1 - oracle, so a mixed-up column shows."""
    vid = f"{side}-{prompt}-{index}"
    return {
        "tag": side, "prompt_id": prompt, "caption": f"a red circle moving left ({prompt})", "index": index,
        "seed": prompt_seed(EVAL_SEED, prompt, index), "video_id": vid, "uri": f"/videos/{vid}.mp4",
        "reward": 1.0 - oracle, **{f"reward_{d}": 1.0 - oracle for d in DIMENSIONS},
        **{f"label_{d}": "Good" for d in DIMENSIONS}, "reward_lift": 0.9, "flicker": flicker, "critic_id": "c",
        "oracle": oracle, **{f"oracle_{a}": oracle for a in ATTRIBUTES},
    }


def eval_rows(aligned: dict, aligned_flicker: float = 0.9) -> list[dict]:
    base = [row("base", p, i, v, 0.9) for (p, i), v in BASE.items()]
    return base + [row("aligned", p, i, v, aligned_flicker) for (p, i), v in reversed(aligned.items())]


def through_parquet(rows: list[dict], path: Path) -> list[dict]:
    """Rows as the evaluate stage writes them (EVAL_SCHEMA) and the benchmark reads them back."""
    pq.write_table(pa.Table.from_pylist(rows, schema=EVAL_SCHEMA), path)
    return path


@pytest.fixture
def bench(benchmark_module):
    return benchmark_module("alignment_quality")


@pytest.fixture
def arms(bench, tmp_path):
    """reward: REWARD; uniform: aligned == base (all ties); dpo: every aligned video 0.25 below its base."""
    made = {"reward": {s: eval_rows(REWARD[s], aligned_flicker=0.99) for s in (0, 1)},
            "uniform": {s: eval_rows(dict(BASE)) for s in (0, 1)},
            "dpo": {s: eval_rows({k: v - 0.25 for k, v in BASE.items()}) for s in (0, 1)}}
    return {m: {s: bench.read_rows(through_parquet(rows, tmp_path / f"{m}-{s}.parquet")) for s, rows in by_seed.items()}
            for m, by_seed in made.items()}


def test_pooled_pairs_pair_by_prompt_and_eval_seed_over_align_seeds(bench, arms):
    aligned, base, prompts = bench.pooled_pairs(arms, [0, 1], ("reward", "aligned"), ("reward", "base"), "oracle")
    assert len(aligned) == len(base) == len(prompts) == 8  # 2 prompts x 2 eval seeds x 2 align seeds
    assert sorted(prompts) == ["p0"] * 4 + ["p1"] * 4
    expected = sorted((BASE[k], REWARD[s][k]) for s in (0, 1) for k in BASE)
    assert sorted(zip(base.tolist(), aligned.tolist())) == expected  # rows paired by key, not by position


def test_pooled_figures_match_the_hand_computed_answers(bench, arms):
    out = bench.pooled_figures(arms, [0, 1])
    reward = out["pooled"]["reward"]
    assert reward["base"] == pytest.approx(0.5) and reward["aligned"] == pytest.approx(0.625)
    assert reward["delta"] == pytest.approx(0.125) and reward["win_rate"] == pytest.approx(0.75)
    assert reward["n_pairs"] == 8 and reward["n_prompts"] == 2
    assert reward["delta_ci"][0] <= reward["delta"] <= reward["delta_ci"][1]
    assert reward["win_rate_ci"][0] <= reward["win_rate"] <= reward["win_rate_ci"][1]
    uniform = out["pooled"]["uniform"]  # all ties: no change, and no spread for the bootstrap to find
    assert (uniform["delta"], uniform["delta_ci"], uniform["win_rate"], uniform["win_rate_ci"]) == (
        0.0, [0.0, 0.0], 0.5, [0.5, 0.5])
    assert out["pooled"]["dpo"]["delta"] == pytest.approx(-0.25) and out["pooled"]["dpo"]["win_rate"] == 0.0
    # Against LiFT, same (prompt, eval seed, align seed): uniform is base, so it loses where LiFT won (5),
    # ties where LiFT tied (2) and wins the one pair LiFT lost: (1 + 2 * 0.5) / 8.
    assert out["vs_lift"]["uniform"]["delta"] == pytest.approx(-0.125)
    assert out["vs_lift"]["uniform"]["win_rate"] == pytest.approx(0.25)
    assert set(out["vs_lift"]) == {"uniform", "dpo"}
    assert out["reward_minus_uniform"]["delta"] == pytest.approx(0.125)
    assert out["reward_minus_uniform"]["win_rate"] == pytest.approx(0.75)
    # The critic's reward is 1 - oracle here; flicker rose from 0.9 to 0.99 in the reward arm only.
    assert out["critic"]["reward"]["delta"] == pytest.approx(-0.125)
    assert out["flicker"]["reward"]["change"] == pytest.approx(0.1)
    assert out["flicker"]["uniform"]["change"] == 0.0
    assert out["oracle_by_attribute"]["reward"]["colour"]["delta"] == pytest.approx(0.125)
    # Per align seed: the evaluate stage's own summary of that arm.
    s0, s1 = out["per_seed"]["reward"]["0"], out["per_seed"]["reward"]["1"]
    assert (s0["oracle_delta"], s0["oracle_win_rate"]) == (pytest.approx(0.0625), pytest.approx(0.625))
    assert (s1["oracle_delta"], s1["oracle_win_rate"]) == (pytest.approx(0.1875), pytest.approx(0.875))
    assert s0["oracle_delta"] == pytest.approx(summarize(arms["reward"][0])["oracle"]["delta"])
    assert out["base_consistent"] is True


def test_unmatched_pairs_and_inconsistent_bases_are_caught(bench, arms):
    broken = {**arms, "dpo": {0: arms["dpo"][0][:-1], 1: arms["dpo"][1]}}  # one aligned video missing
    with pytest.raises(ValueError, match="do not cover the same"):
        bench.pooled_pairs(broken, [0, 1], ("dpo", "aligned"), ("dpo", "base"), "oracle")
    shifted = [dict(r, oracle=0.0) if r["tag"] == "base" else r for r in arms["dpo"][1]]
    assert bench.base_consistent({**arms, "dpo": {0: arms["dpo"][0], 1: shifted}}, [0, 1]) is False


def test_scales_replace_the_cached_rerun_scales_keys(bench):
    tiny = dict(o.split("=", 1) for o in bench.SCALES["tiny"])
    assert len(tiny) == len(bench.SCALES["tiny"])  # each key once
    assert tiny["generate.videos_per_prompt"] == "2" and tiny["evaluate.max_prompts"] == "2"  # DPO pairs, 2 clusters
    assert tiny["align.train.max_steps"] == "1" and bench.SCALES["demo"] == []


def test_run_outputs_reads_the_json_lift_run_prints_last(bench):
    outputs = {"align": {"lora": "/r/align/k/lora"}, "evaluate": {"eval_parquet": "/r/evaluate/k/eval.parquet"}}
    log = ("prefect: starting\n{\n  \"not\": 1\n}\nlift-full: 9 tasks, 8 cache hits\n"
           + json.dumps(outputs, indent=2) + "\nshutting down the temporary server\n")
    assert bench.run_outputs(log) == outputs
    with pytest.raises(ValueError):
        bench.run_outputs("no json here\n")


def test_a_relative_run_root_keeps_its_spelling_through_a_link(bench, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = tmp_path / "code"
    code.mkdir()
    assert bench.link_run_root(code, "./runs/demo") == "./runs/demo"
    assert (code / "runs" / "demo").resolve() == (tmp_path / "runs" / "demo").resolve()
    assert bench.link_run_root(code, str(tmp_path / "abs")) == str(tmp_path / "abs")
    with pytest.raises(ValueError):
        bench.link_run_root(code, "../elsewhere")


def test_main_publishes_the_fixed_keys(bench, arms, tmp_path, monkeypatch):
    """main with each `lift run` replaced by the rows above: the JSON's fixed keys and the Markdown."""
    calls = []

    def fake_run_arm(code, run_root, overrides, home, log, timeout):
        method = next(m for m, o in bench.METHODS.items() if overrides[-len(o):] == o)
        seed = int(next(o for o in overrides if o.startswith("align.train.seed=")).split("=")[1])
        calls.append((method, seed, run_root))
        path = tmp_path / f"run-{method}-{seed}.parquet"
        through_parquet(arms[method][seed], path)
        return {"seconds": 1.5, "tasks": 9, "cache_hits": 7, "eval_parquet": str(path)}

    monkeypatch.setattr(bench, "run_arm", fake_run_arm)
    monkeypatch.setattr(bench, "snapshot_code", lambda dest, code: "worktree")
    out = tmp_path / "results"
    result = bench.main(["--seeds", "0", "1", "--work", str(tmp_path / "work"), "--out-dir", str(out)])
    written = json.loads((out / "alignment_quality.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert {"name", "machine", "figures", "ratio", "ratio_means", "command", "seeds", "pooled", "vs_lift",
            "reward_minus_uniform", "critic", "flicker", "per_seed", "timings"} <= set(written)
    assert written["seeds"] == [0, 1] and set(written["pooled"]) == {"reward", "uniform", "dpo"}
    for figures in written["pooled"].values():
        assert {"base", "aligned", "delta", "delta_ci", "win_rate", "win_rate_ci"} <= set(figures)
        assert len(figures["delta_ci"]) == len(figures["win_rate_ci"]) == 2
    for figures in written["vs_lift"].values():
        assert set(figures) == {"delta", "delta_ci", "win_rate", "win_rate_ci"}
    assert {"delta", "delta_ci"} <= set(written["reward_minus_uniform"])
    assert len(calls) == 6 and calls[0][:2] == ("reward", 0)  # seed by seed, LiFT first
    assert len({c[2] for c in calls}) == 1  # every arm into one run root
    assert written["timings"]["total_seconds"] == 9.0 and written["ratio"] == pytest.approx(1.25)
    md = (out / "alignment_quality.md").read_text()
    assert "| reward | 0.5000 | 0.6250 | +0.1250 | [" in md and "Reward-weighted - uniform" in md
    assert not list((tmp_path / "work").iterdir())  # the work folder is removed without --keep


def test_the_ceiling_arm_rewards_each_align_sample_with_its_oracle_adherence(bench, tmp_path):
    """The opt-in ceiling's reward file: one row per align sample, scored by the oracle from the video's
    pixels (a caption-true synth render reads 1.0; the same video under a caption wrong in colour and
    shape reads 0.5), in LiFT's alignment JSON format that `align.reward_source=file` reads."""
    from lift_core.critic.import_scores import detect_format
    from lift_core.video.io import encode_mp4
    from lift_core.video.synth import SynthSpec, render

    spec = SynthSpec("red", "circle", "one", "left", "smooth", "clean", "red", "circle", "one")
    uri = tmp_path / "v.mp4"
    uri.write_bytes(encode_mp4(render(spec, 32, 32, 9, seed=3), fps=8))
    samples = tmp_path / "samples.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"video_id": "a", "uri": str(uri), "caption": spec.caption, "source": "hd-vila", "reward": 0.7, "weight": 0.7},
        {"video_id": "a", "uri": str(uri), "caption": "one blue square moving left", "source": "generated",
         "reward": 0.7, "weight": 0.7}]), samples)
    out = tmp_path / "oracle.json"
    assert bench.oracle_reward_file(samples, out, 32, 32) == 2
    rows = json.loads(out.read_text())
    assert [(r["caption"], r["score"]) for r in rows] == [(spec.caption, 1.0), ("one blue square moving left", 0.5)]
    assert detect_format(str(out)) == "alignment"
    assert bench.CEILING in bench.METHODS and bench.CEILING not in bench.DEFAULT_METHODS
