"""Analysis: what LiFT's reward weights select in an alignment's training set, beside the oracle's weights.

Reward-weighted fine-tuning can beat plain fine-tuning (LiFT's claim, ``reward - uniform``) only when its
weights put more mass on the training videos that follow their captions. This reads one ``align`` stage
output (``samples.parquet``: every training video with its critic reward and weight), has the pixel
oracle read each video's caption adherence, and reports, on the generated videos:

- the reward's spread: mean, standard deviation, coefficient of variation, and the spread within a prompt
  (the weights rank the samples of one prompt against each other);
- how well the reward tracks the oracle: Pearson correlation over all videos and within prompts (each
  prompt's mean removed), with 95% bootstrap intervals over prompts;
- for each weighting (``uniform``, LiFT's ``reward``, the ``oracle`` itself as the ceiling's reward): the
  mean weight (the loss is ``sum(w * l) / n``, so it scales the step like a learning rate), the effective
  sample size, the real videos' share of the total weight, and the **selection gain**: the weighted mean
  oracle adherence of the training videos minus their plain mean, overall and per attribute.

``ratio`` is the reward's selection gain over the oracle's: the share of a perfect critic's selection that
LiFT's critic achieves (1 = as good as the oracle, 0 = no better than uniform).

    python benchmarks/reward_selection.py                                    # the newest align output of ./runs/demo
    python benchmarks/reward_selection.py --samples <run_root>/align/<key>   # a given one (e.g. an arm's)

It reads only training-prompt videos (generated from the train split, plus the real ones): no held-out
prompt is touched. Writes ``<out-dir>/reward_selection.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _common import command, machine, publish  # benchmarks/ is on sys.path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NAME = "reward_selection"
WEIGHTINGS = ("uniform", "reward", "oracle")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def demeaned(values: np.ndarray, groups: list[str]) -> np.ndarray:
    """``values`` minus the mean of their group."""
    values, labels = np.asarray(values, float), np.asarray(groups)
    out = values.copy()
    for g in np.unique(labels):
        out[labels == g] -= values[labels == g].mean()
    return out


def selection_gain(oracle: np.ndarray, weights: np.ndarray) -> float:
    """Weighted mean of ``oracle`` minus its plain mean: what the weights select."""
    weights = np.asarray(weights, float)
    return float((oracle * weights).sum() / weights.sum() - oracle.mean()) if weights.sum() > 0 else 0.0


def weightings(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per weighting, the weight of each row as the align stage gives it (real videos keep the stage's
    ``real_scale``, read from the recorded weight over reward)."""
    reward = np.array([r["reward"] for r in rows], float)
    scale = np.array([r["weight"] / r["reward"] if r["reward"] else 1.0 for r in rows], float)
    oracle = np.array([r["oracle"] for r in rows], float)
    return {"uniform": np.ones(len(rows)), "reward": reward * scale, "oracle": oracle}


def figures(rows: list[dict[str, Any]], attributes: tuple[str, ...], seed: int = 0) -> dict[str, Any]:
    """The report's figures from training rows carrying ``source``, ``caption``, ``reward``, ``weight``,
    ``oracle`` and ``oracle_<attribute>`` (rows the oracle cannot read are left out and counted)."""
    from lift_core.metrics.paired import bootstrap_ci

    readable = [r for r in rows if r["oracle"] is not None]
    gen = [r for r in readable if r["source"] == "generated"]
    if len(gen) < 2:
        raise ValueError(f"need generated training videos the oracle can read; got {len(gen)}")
    prompts = [r["caption"] for r in gen]
    reward = np.array([r["reward"] for r in gen], float)
    oracle = np.array([r["oracle"] for r in gen], float)
    within_std = [float(reward[np.asarray(prompts) == p].std()) for p in sorted(set(prompts))]
    varied = [len({r["oracle"] for r in gen if r["caption"] == p}) > 1 for p in sorted(set(prompts))]
    dr, do = demeaned(reward, prompts), demeaned(oracle, prompts)
    out: dict[str, Any] = {
        "videos": {"generated": len(gen), "real": sum(r["source"] != "generated" for r in readable),
                   "unreadable_by_oracle": len(rows) - len(readable), "prompts": len(set(prompts))},
        "reward": {"mean": float(reward.mean()), "std": float(reward.std()),
                   "cv": float(reward.std() / reward.mean()) if reward.mean() else 0.0,
                   "within_prompt_std": float(np.mean(within_std)),
                   "real_mean": float(np.mean([r["reward"] for r in readable if r["source"] != "generated"] or [np.nan]))},
        "oracle": {"mean": float(oracle.mean()), "share_of_prompts_whose_samples_differ": float(np.mean(varied)),
                   "by_attribute": {a: float(np.mean([r[f"oracle_{a}"] for r in gen])) for a in attributes}},
        "correlation": {
            "overall": pearson(reward, oracle), "overall_ci": bootstrap_ci(pearson, reward, oracle, prompts, seed=seed),
            "within_prompt": pearson(dr, do), "within_prompt_ci": bootstrap_ci(pearson, dr, do, prompts, seed=seed),
        },
    }
    w_all = weightings(readable)
    is_gen = np.array([r["source"] == "generated" for r in readable])
    out["weightings"] = {}
    for name in WEIGHTINGS:
        w_gen = w_all[name][is_gen]
        out["weightings"][name] = {
            "mean_weight": float(w_all[name].mean()),
            "effective_sample_size": float(w_all[name].sum() ** 2 / (w_all[name] ** 2).sum()),
            "real_weight_share": float(w_all[name][~is_gen].sum() / w_all[name].sum()),
            "selection_gain": selection_gain(oracle, w_gen),
            "selection_gain_ci": bootstrap_ci(selection_gain, oracle, w_gen, prompts, seed=seed),
            "selection_gain_by_attribute": {
                a: selection_gain(np.array([r[f"oracle_{a}"] for r in gen], float), w_gen) for a in attributes},
        }
    return out


def read_rows(samples_dir: str, height: int, width: int) -> list[dict[str, Any]]:
    """The stage's training rows, each with the oracle's reading of its video."""
    from lift_core import storage
    from lift_core.t2v.evaluate import pixel_metrics

    rows = storage.read_table(storage.join(samples_dir, "samples.parquet")).to_pylist()
    if not rows:
        raise ValueError(f"{samples_dir}: samples.parquet holds no training rows")
    readings = pixel_metrics([r["uri"] for r in rows], [r["caption"] for r in rows], height, width)
    return [{**r, **m} for r, m in zip(rows, readings)]


def newest_align_output(run_root: str) -> str:
    """The most recently finished ``align`` stage output under ``run_root``."""
    done = sorted(Path(run_root).glob("align/*/_SUCCESS.json"), key=lambda p: p.stat().st_mtime)
    if not done:
        raise SystemExit(f"reward_selection: no finished align stage under {run_root}/align: run `make demo` "
                         f"first, or name one with --samples")
    return str(done[-1].parent)


def markdown(result: dict[str, Any], attributes: tuple[str, ...]) -> str:
    f = result["figures"]
    c, rw = f["correlation"], f["reward"]
    lines = [
        "# What LiFT's reward weights select in the alignment's training set",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, GPU: {result['machine']['gpu'] or 'none'}. "
        f"Training set: `{f['samples']}` ({f['videos']['generated']} generated videos of {f['videos']['prompts']} "
        f"training prompts, {f['videos']['real']} real). No held-out prompt is read.",
        "",
        f"- Critic reward of the generated videos: mean {rw['mean']:.3f}, std {rw['std']:.3f} (CV {rw['cv']:.2f}); "
        f"std within a prompt {rw['within_prompt_std']:.3f}. Real videos: mean {rw['real_mean']:.3f}.",
        f"- Oracle adherence of the generated videos: {f['oracle']['mean']:.3f} "
        f"({', '.join(f'{a} {v:.3f}' for a, v in f['oracle']['by_attribute'].items())}); the samples of "
        f"{f['oracle']['share_of_prompts_whose_samples_differ']:.0%} of the prompts differ in adherence.",
        f"- Reward vs oracle, Pearson: overall {c['overall']:+.3f} [{c['overall_ci'][0]:+.3f}, {c['overall_ci'][1]:+.3f}]; "
        f"within prompts {c['within_prompt']:+.3f} [{c['within_prompt_ci'][0]:+.3f}, {c['within_prompt_ci'][1]:+.3f}].",
        "",
        "| weighting | mean weight (step scale) | effective sample size | real videos' share of weight | "
        "selection gain (weighted - plain mean adherence) | 95% CI | "
        + " | ".join(f"gain: {a}" for a in attributes) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(attributes),
    ]
    for name, w in f["weightings"].items():
        lines.append(f"| {name} | {w['mean_weight']:.3f} | {w['effective_sample_size']:.1f} | {w['real_weight_share']:.3f} | "
                     f"{w['selection_gain']:+.4f} | [{w['selection_gain_ci'][0]:+.4f}, {w['selection_gain_ci'][1]:+.4f}] | "
                     + " | ".join(f"{w['selection_gain_by_attribute'][a]:+.4f}" for a in attributes) + " |")
    lines += ["", f"Ratio (reward's selection gain over the oracle's): {result['ratio']:.3f}.", "",
              f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", default=None,
                   help="an align stage output folder (holds samples.parquet); default: the newest under --run-root")
    p.add_argument("--run-root", default="runs/demo", help="where to look for it without --samples")
    p.add_argument("--config", default="configs/demo.yaml", help="the config the videos were made with (their size)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)

    from lift_core.config import load_config
    from lift_core.metrics.oracle import ATTRIBUTES

    cfg = load_config(args.config, args.override)
    samples = args.samples or newest_align_output(args.run_root)
    rows = read_rows(samples, cfg.t2v.height, cfg.t2v.width)
    figs = {"samples": samples, **figures(rows, ATTRIBUTES, seed=args.seed)}
    oracle_gain = figs["weightings"]["oracle"]["selection_gain"]
    ratio = figs["weightings"]["reward"]["selection_gain"] / oracle_gain if oracle_gain else 0.0
    result = {"name": NAME, "machine": machine(), "figures": figs, "ratio": round(ratio, 4),
              "ratio_means": "the reward's selection gain over the oracle's (1: as good as the oracle, 0: uniform)",
              "command": command("reward_selection.py", argv)}
    return publish(args.out_dir, result, markdown(result, ATTRIBUTES))


if __name__ == "__main__":
    main()
