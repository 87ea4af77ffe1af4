"""Benchmark: alignment quality of LiFT's reward-weighted likelihood, plain fine-tuning and Diffusion-DPO,
3 alignment seeds each, on the same generations and rewards, judged by the pixel oracle and the critic.

Arms: ``reward`` (LiFT: ``align.objective=lift align.weighting=reward``), ``uniform`` (the ablation, weight 1:
``align.objective=lift align.weighting=uniform``) and ``dpo`` (``align.objective=dpo``), each with
``align.train.seed=<s>``. Each arm is the real command, in a fresh process, into ONE run root::

    python -m flows.cli run --config configs/demo.yaml run_root=<root> <scale> align.train.seed=<s> <arm>

so everything upstream of alignment (synth, ingest, decode, critic training, the T2V base, generation,
decode of the generations, scoring) computes once, in the first arm, and the others find its
``_SUCCESS.json`` (each arm's task and cache-hit counts are in the output). The align and evaluate
stages compute per arm. The evaluate stage's key holds the aligned adapter, so the base model's
evaluation videos are generated again in every arm (same prompts, same seeds: the output checks that
they score the same in every arm, ``base_consistent``).

Judging: the evaluate stage's ``eval.parquet`` of each arm (one row per video: tag base|aligned,
prompt_id, index, seed, reward, reward_<dim>, flicker, oracle, oracle_<attr>). Base and aligned videos
pair by (prompt, eval seed); a method's figures pool its pairs over the alignment seeds, one pair per
(prompt, eval seed, align seed), with 95% cluster-bootstrap intervals over prompts
(``lift_core.metrics.paired``). ``vs_lift`` pairs each method's aligned video with the reward-weighted
arm's of the same (prompt, eval seed, align seed); ``reward_minus_uniform`` is LiFT's claim (issue 13).
Every figure in ``pooled`` and ``vs_lift`` is the oracle's caption adherence; the critic's reward (the
signal that trained the models, so not an independent judge) and flicker are reported beside it.
Seeds and prompts are fixed: ``--seeds`` defaults to 0 1 2 and the prompts are the config's.

    python benchmarks/alignment_quality.py                                  # demo scale, fresh temp run root
    make demo && python benchmarks/alignment_quality.py --code worktree --run-root ./runs/demo
                                                                            # reuse the demo's upstream stages
    python benchmarks/alignment_quality.py --scale tiny --seeds 0 --methods reward   # a smoke run

``--run-root`` reuses a run root: its stages are cache hits only when their keys match, that is the
same code (``--code worktree`` for a ``make demo`` run from the working tree), the same config and the
same spelling of the run root (a relative one is resolved against the current folder, as ``make
demo`` does). Writes ``<out-dir>/alignment_quality.json`` and ``alignment_quality.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from _common import command, machine, publish  # benchmarks/ is on sys.path
from cached_rerun import CONFIG, REPO, SMALL, TINY, lift_run, snapshot_code

NAME = "alignment_quality"
METHODS: dict[str, list[str]] = {
    "reward": ["align.objective=lift", "align.weighting=reward"],
    "uniform": ["align.objective=lift", "align.weighting=uniform"],
    "dpo": ["align.objective=dpo"],
    # Opt-in diagnostic, not a method: LiFT's objective with the pixel oracle's adherence of each training
    # sample as its reward (``align.reward_file``, written from the first arm's align samples). The judge is
    # then the training signal, so its figures bound what a perfect critic could give; never a result.
    "oracle_ceiling": ["align.objective=lift", "align.weighting=reward", "align.reward_source=file"],
}
DEFAULT_METHODS = ("reward", "uniform", "dpo")
CEILING = "oracle_ceiling"
REFERENCE = "reward"  # LiFT's reward-weighted likelihood: what vs_lift compares against
DEFAULT_SEEDS = (0, 1, 2)
# The cached-rerun benchmark's scales, plus what DPO and the paired statistics need: two videos per
# prompt (a pair to prefer), every reward gap kept, and two held-out prompts (two bootstrap clusters).
def replacing(base: list[str], extra: list[str]) -> list[str]:
    """``base`` overrides with those of ``extra`` put in place of any with the same key."""
    keys = {o.split("=", 1)[0] for o in extra}
    return [o for o in base if o.split("=", 1)[0] not in keys] + extra


SCALES: dict[str, list[str]] = {
    "tiny": replacing(TINY, ["generate.videos_per_prompt=2", "align.dpo.min_gap=0.0", "evaluate.max_prompts=2"]),
    "small": replacing(SMALL, ["generate.videos_per_prompt=2"]),
    "demo": [],
}
BOOTSTRAP_SEED = 0


# --------------------------------------------------------------------------- running the arms
def arm_overrides(method: str, seed: int) -> list[str]:
    return [f"align.train.seed={seed}", *METHODS[method]]


def oracle_reward_file(samples_parquet: str | Path, out_json: str | Path, height: int, width: int) -> int:
    """Write LiFT's alignment JSON (``[{video, caption, score}]``) with the pixel oracle's adherence of every
    align sample (generated and real, read at the T2V's ``height x width`` as the evaluate stage reads its
    videos) as its score: the ceiling arm's rewards. Returns the rows written (captions outside the synthetic
    world have no oracle reading and keep the critic's reward)."""
    import pyarrow.parquet as pq

    from lift_core.t2v.evaluate import pixel_metrics

    rows = pq.read_table(samples_parquet).to_pylist()
    metrics = pixel_metrics([r["uri"] for r in rows], [r["caption"] for r in rows], height, width)
    scored = [{"video": r["uri"], "caption": r["caption"], "score": m["oracle"]}
              for r, m in zip(rows, metrics) if m["oracle"] is not None]  # None: not the synthetic world
    Path(out_json).write_text(json.dumps(scored, indent=1))
    return len(scored)


def run_outputs(log_text: str) -> dict[str, dict[str, str]]:
    """``{label: outputs}``: the JSON ``lift run`` prints last (a line ``{`` opens it)."""
    at = log_text.rfind("\n{\n")
    if at >= 0:
        start = at + 1
    elif log_text.startswith("{\n"):
        start = 0
    else:
        raise ValueError("no stage outputs in the `lift run` log")
    outputs, _ = json.JSONDecoder().raw_decode(log_text[start:])
    return outputs


def run_arm(code: Path, run_root: str, overrides: list[str], home: Path, log: Path, timeout: float) -> dict[str, Any]:
    """One arm: ``lift run`` in a fresh process; its timing, task and cache-hit counts and eval.parquet."""
    timing = lift_run(code, run_root, overrides, home, log, timeout)
    outputs = run_outputs(log.read_text(errors="replace"))
    eval_parquet = Path(outputs["evaluate"]["eval_parquet"])
    if not eval_parquet.is_absolute():
        eval_parquet = code / eval_parquet  # a relative run root resolves against the process's folder
    samples = Path(outputs["align"]["samples"])
    return {**timing, "eval_parquet": str(eval_parquet),
            "align_samples": str(samples if samples.is_absolute() else code / samples)}


def read_rows(eval_parquet: str | Path) -> list[dict[str, Any]]:
    """The evaluate stage's per-video rows (``lift_core.t2v.evaluate.EVAL_SCHEMA``)."""
    import pyarrow.parquet as pq

    return pq.read_table(eval_parquet).to_pylist()


# --------------------------------------------------------------------------- pairing and pooling
Arms = Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]]  # method -> align seed -> eval rows


def by_pair(rows: Sequence[Mapping[str, Any]], side: str) -> dict[tuple[str, int], Mapping[str, Any]]:
    """The rows of one side (``tag``), by (prompt, eval seed)."""
    out = {}
    for r in rows:
        if r["tag"] == side:
            key = (r["prompt_id"], int(r["seed"]))
            if key in out:
                raise ValueError(f"two {side} videos for prompt {key[0]!r}, eval seed {key[1]}")
            out[key] = r
    return out


def pooled_pairs(arms: Arms, seeds: Sequence[int], left: tuple[str, str], right: tuple[str, str],
                 column: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Paired ``column`` values, ``left`` and ``right`` each a (method, side), pooled over ``seeds``: one pair
    per (prompt, eval seed, align seed); returns (left values, right values, prompt of each pair)."""
    lvals, rvals, prompts = [], [], []
    for seed in seeds:
        lrows, rrows = by_pair(arms[left[0]][seed], left[1]), by_pair(arms[right[0]][seed], right[1])
        if set(lrows) != set(rrows):
            raise ValueError(f"align seed {seed}: {left} and {right} do not cover the same (prompt, eval seed) "
                             f"pairs ({len(lrows)} vs {len(rrows)})")
        if not lrows:
            raise ValueError(f"align seed {seed}: no {left[1]} videos for {left[0]}")
        for key in sorted(lrows):
            lv, rv = lrows[key][column], rrows[key][column]
            if lv is None or rv is None:
                raise ValueError(f"no {column} for prompt {key[0]!r} (its caption is outside the synthetic world?)")
            lvals.append(float(lv))
            rvals.append(float(rv))
            prompts.append(key[0])
    return np.array(lvals), np.array(rvals), prompts


def compare(arms: Arms, seeds: Sequence[int], left: tuple[str, str], right: tuple[str, str],
            column: str = "oracle") -> dict[str, Any]:
    """``paired_figures`` of left over right (``aligned``/``base`` name left and right), plus ``n_pairs``."""
    from lift_core.t2v.evaluate import paired_figures

    lv, rv, prompts = pooled_pairs(arms, seeds, left, right, column)
    figures = paired_figures(lv, rv, prompts, BOOTSTRAP_SEED)
    return {**figures, "n_pairs": len(prompts), "n_prompts": len(set(prompts))}


def _pick(figures: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: figures[k] for k in keys}


def pooled_figures(arms: Arms, seeds: Sequence[int]) -> dict[str, Any]:
    """Every pooled figure of the result: oracle per method (over base and over LiFT), critic reward, flicker,
    oracle per attribute, per-seed summaries and whether the base videos agree across arms."""
    from lift_core.metrics.oracle import ATTRIBUTES
    from lift_core.t2v.evaluate import summarize

    methods = [m for m in METHODS if m in arms]
    out: dict[str, Any] = {"pooled": {}, "vs_lift": {}, "reward_minus_uniform": None, "critic": {}, "flicker": {},
                           "oracle_by_attribute": {}, "per_seed": {}}
    for m in methods:
        aligned, base = (m, "aligned"), (m, "base")
        oracle = compare(arms, seeds, aligned, base)
        out["pooled"][m] = _pick(oracle, "base", "aligned", "delta", "delta_ci", "win_rate", "win_rate_ci",
                                 "n_pairs", "n_prompts")
        out["critic"][m] = _pick(compare(arms, seeds, aligned, base, "reward"), "base", "aligned", "delta", "delta_ci",
                                 "win_rate", "win_rate_ci")
        flicker = compare(arms, seeds, aligned, base, "flicker")
        out["flicker"][m] = {**_pick(flicker, "base", "aligned", "delta", "delta_ci"),
                             "change": (flicker["aligned"] - flicker["base"]) / max(abs(flicker["base"]), 1e-12)}
        out["oracle_by_attribute"][m] = {
            a: _pick(compare(arms, seeds, aligned, base, f"oracle_{a}"), "base", "aligned", "delta", "delta_ci")
            for a in ATTRIBUTES}
        per_seed = {}
        for s in seeds:
            summary = summarize(list(arms[m][s]), seed=BOOTSTRAP_SEED)
            o = summary.get("oracle") or {}
            per_seed[str(s)] = {
                "oracle_base": o.get("base"), "oracle_aligned": o.get("aligned"), "oracle_delta": o.get("delta"),
                "oracle_win_rate": o.get("win_rate"), "reward_delta": summary["reward_delta"],
                "reward_win_rate": summary["win_rate"], "flicker_change": summary["flicker_change"],
                "n_pairs": summary["n_pairs"]}
        out["per_seed"][m] = per_seed
        if m != REFERENCE and REFERENCE in arms:
            out["vs_lift"][m] = _pick(compare(arms, seeds, aligned, (REFERENCE, "aligned")), "delta", "delta_ci",
                                      "win_rate", "win_rate_ci")
    if "reward" in arms and "uniform" in arms:
        out["reward_minus_uniform"] = _pick(compare(arms, seeds, ("reward", "aligned"), ("uniform", "aligned")),
                                            "delta", "delta_ci", "win_rate", "win_rate_ci")
    out["base_consistent"] = base_consistent(arms, seeds)
    return out


def base_consistent(arms: Arms, seeds: Sequence[int], tol: float = 1e-6) -> bool:
    """Whether every arm's base videos got the same oracle and critic figures (the base is regenerated per arm)."""
    ref: dict[tuple[str, int], tuple[Any, Any]] = {}
    for m in arms:
        for s in seeds:
            for key, r in by_pair(arms[m][s], "base").items():
                got = (r["oracle"], r["reward"])
                want = ref.setdefault(key, got)
                if any((a is None) != (b is None) or (a is not None and abs(a - b) > tol) for a, b in zip(got, want)):
                    return False
    return True


# --------------------------------------------------------------------------- the report
def _f(x: Any, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.4f}" if sign else f"{x:.4f}"


def _ci(ci: Sequence[float] | None, sign: bool = False) -> str:
    return "–" if not ci else f"[{_f(ci[0], sign)}, {_f(ci[1], sign)}]"


def render_md(result: dict[str, Any]) -> str:
    from lift_core.stages import md_table

    f = result["figures"]
    n = next(iter(result["pooled"].values()), {})
    lines = [
        "# Alignment quality: LiFT reward-weighted vs plain fine-tuning vs Diffusion-DPO",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, GPU: {result['machine']['gpu'] or 'none'}. Code: {f['code']}. "
        f"Scale: **{f['scale']}** (`{f['config']}`"
        + (" with " + ", ".join(f"`{o}`" for o in f["overrides"]) if f["overrides"] else "") + ").",
        "",
        f"Alignment seeds {result['seeds']}; each method's figures pool {n.get('n_pairs', '–')} base/aligned pairs "
        f"(held-out prompt x eval seed x align seed, {n.get('n_prompts', '–')} prompts). 95% intervals: "
        "bootstrap over prompts. Every arm is one `lift run` into one run root (upstream stages computed once).",
        "",
        "## Pixel-oracle caption adherence (independent of the critic)",
        "",
        md_table([{"method": m, "base": _f(p["base"]), "aligned": _f(p["aligned"]),
                   "aligned - base": _f(p["delta"], True), "95% CI": _ci(p["delta_ci"], True),
                   "win rate": _f(p["win_rate"]), "win rate 95% CI": _ci(p["win_rate_ci"])}
                  for m, p in result["pooled"].items()]),
    ]
    if CEILING in result["pooled"]:
        lines += ["", f"`{CEILING}` is a diagnostic, not a method: its reward is the pixel oracle's adherence, so "
                      "the judge is its training signal. It bounds what a perfect critic could give."]
    if result["vs_lift"]:
        lines += ["", "Against LiFT's reward-weighted arm (same prompt, eval seed and align seed):", "",
                  md_table([{"method": m, "method - reward": _f(v["delta"], True), "95% CI": _ci(v["delta_ci"], True),
                             "win rate over reward": _f(v["win_rate"]), "win rate 95% CI": _ci(v["win_rate_ci"])}
                            for m, v in result["vs_lift"].items()])]
    rmu = result["reward_minus_uniform"]
    if rmu:
        lines += ["", f"**Reward-weighted - uniform** (LiFT's claim): {_f(rmu['delta'], True)} "
                      f"(95% CI {_ci(rmu['delta_ci'], True)}), win rate {_f(rmu['win_rate'])}."]
    lines += ["", "## Critic reward and flicker", "",
              "The critic is the signal that trained the aligned models: not an independent judge.", "",
              md_table([{"method": m, "reward base": _f(c["base"]), "reward aligned": _f(c["aligned"]),
                         "delta": _f(c["delta"], True), "95% CI": _ci(c["delta_ci"], True),
                         "flicker base": _f(result["flicker"][m]["base"]),
                         "flicker aligned": _f(result["flicker"][m]["aligned"]),
                         "flicker change": f"{result['flicker'][m]['change']:+.2%}"}
                        for m, c in result["critic"].items()]),
              "", "## Oracle adherence per attribute (pooled)", "",
              md_table([{"method": m, "attribute": a, "base": _f(v["base"]), "aligned": _f(v["aligned"]),
                         "delta": _f(v["delta"], True)}
                        for m, attrs in result["oracle_by_attribute"].items() for a, v in attrs.items()]),
              "", "## Per alignment seed", "",
              md_table([{"method": m, "seed": s, "oracle base": _f(v["oracle_base"]),
                         "oracle aligned": _f(v["oracle_aligned"]), "oracle delta": _f(v["oracle_delta"], True),
                         "oracle win rate": _f(v["oracle_win_rate"]), "reward delta": _f(v["reward_delta"], True),
                         "flicker change": f"{v['flicker_change']:+.2%}"}
                        for m, seeds in result["per_seed"].items() for s, v in seeds.items()]),
              "", "## Runs", "",
              md_table([{"arm": f"{t['method']} seed {t['seed']}", "seconds": f"{t['seconds']:.1f}",
                         "tasks": t["tasks"], "cache hits": t["cache_hits"]} for t in result["timings"]["arms"]]),
              "", f"Total: {result['timings']['total_seconds']:.1f} s. The base model's evaluation videos are "
                  "regenerated in every arm (the evaluate stage's key holds the adapter); they "
                  + ("score identically in every arm." if result["base_consistent"] else
                     "**do not** score identically in every arm: generation is not deterministic here."),
              "", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def build_result(arms: Arms, seeds: Sequence[int], timings: list[dict[str, Any]], figures: dict[str, Any],
                 cmd: str) -> dict[str, Any]:
    """The published result: the fixed keys (``seeds``, ``pooled``, ``vs_lift``, ``reward_minus_uniform``) and
    the benchmark convention's (``name``, ``machine``, ``figures``, ``ratio``, ``ratio_means``, ``command``)."""
    pooled = pooled_figures(arms, seeds)
    ref = pooled["pooled"].get(REFERENCE)
    return {
        "name": NAME,
        "machine": machine(),
        "seeds": list(seeds),
        "methods": [m for m in METHODS if m in arms],
        **pooled,
        "timings": {"arms": timings, "total_seconds": round(sum(t["seconds"] for t in timings), 2)},
        "figures": figures,
        "ratio": round(ref["aligned"] / ref["base"], 4) if ref and ref["base"] else None,
        "ratio_means": "pooled oracle adherence of the reward-weighted (LiFT) arm's aligned model divided by the "
                       "base model's, on the same held-out prompts and eval seeds",
        "command": cmd,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="demo",
                   help="demo (default): configs/demo.yaml unchanged; small: a tenth of its data and steps; "
                        "tiny: every stage at its test size (a smoke run, figures meaningless)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="align.train.seed values")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(DEFAULT_METHODS),
                   help=f"default: {' '.join(DEFAULT_METHODS)}; add {CEILING} for the diagnostic ceiling "
                        "(the pixel oracle as the reward)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override on top of the scale, for every arm (repeatable)")
    p.add_argument("--code", choices=("head", "worktree"), default="head",
                   help="the code every arm runs, copied once: the committed tree (default) or the working tree")
    p.add_argument("--run-root", default=None,
                   help="reuse this run root (e.g. ./runs/demo after `make demo`); default: a fresh one in --work")
    p.add_argument("--work", default=None, help="where the code copy, PREFECT_HOME and logs go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (and a fresh run root in it)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per arm")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)

    overrides = [*SCALES[args.scale], *args.override]
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-alignment-quality-", dir=args.work))
    home, code = work / "prefect-home", work / "code"
    home.mkdir(parents=True)
    arms: dict[str, dict[int, list[dict[str, Any]]]] = {m: {} for m in args.methods}
    timings: list[dict[str, Any]] = []
    samples: str | None = None
    t0 = time.perf_counter()
    try:
        version = snapshot_code(code, args.code)
        run_root = str(work / "run")
        if args.run_root:
            run_root = link_run_root(code, args.run_root)
        for seed in args.seeds:
            for method in args.methods:
                log = work / f"{method}-seed{seed}.log"
                print(f"alignment_quality: {method}, align seed {seed}", file=sys.stderr, flush=True)
                extra = []
                if method == CEILING:
                    rewards = work / "oracle_rewards.json"
                    if not rewards.exists():  # the align samples are the same in every arm: any earlier one's
                        if not samples:
                            raise SystemExit(f"alignment_quality: {CEILING} needs another method before it")
                        from lift_core.config import load_config

                        t2v = load_config(REPO / CONFIG, overrides).t2v
                        oracle_reward_file(samples, rewards, t2v.height, t2v.width)
                    extra = [f"align.reward_file={rewards}"]
                arm = run_arm(code, run_root, [*overrides, *arm_overrides(method, seed), *extra], home, log,
                              args.timeout)
                found = arm.pop("align_samples", None)
                samples = samples or found
                arms[method][seed] = read_rows(arm.pop("eval_parquet"))
                timings.append({"method": method, "seed": seed, **arm})
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    fresh = f"(fresh, kept) {work / 'run'}" if args.keep else "(fresh, removed)"
    figures = {"scale": args.scale, "config": CONFIG, "overrides": overrides, "code": version,
               "run_root": args.run_root or fresh, "arm_overrides": {m: METHODS[m] for m in args.methods},
               "wall_seconds": round(time.perf_counter() - t0, 2),
               "bootstrap": "95% percentile interval over 2000 resamples of prompts "
                            "(lift_core.metrics.paired.bootstrap_ci)"}
    result = build_result(arms, args.seeds, timings, figures, command("alignment_quality.py", argv).strip())
    publish(args.out_dir, result, render_md(result))
    return result


def link_run_root(code: Path, run_root: str) -> str:
    """The ``run_root=`` value for a reused run root: an absolute one as given; a relative one keeps its
    spelling (config values such as ``{run_root}/models/...`` are part of stage keys) through a link at
    the same relative path inside the code copy, where every arm runs."""
    if os.path.isabs(run_root):
        return run_root
    target = Path(run_root).resolve()
    target.mkdir(parents=True, exist_ok=True)
    link = (code / run_root)
    if code.resolve() not in link.resolve().parents and link.resolve() != code.resolve():
        raise ValueError(f"--run-root {run_root!r} leaves the code folder: give it as an absolute path")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    return run_root


if __name__ == "__main__":
    main()
