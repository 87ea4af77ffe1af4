"""Benchmark: a fully cached rerun of ``lift run`` against the first run, on the demo config.

In one run, into one fresh run root (and one fresh ``PREFECT_HOME``, as a new user has):

1. ``lift run --config configs/demo.yaml run_root=<fresh> <scale overrides>``: every stage computes;
2. the same command again: every stage finds its ``_SUCCESS.json`` / cached Prefect result.

Each is the real command, in a fresh process (``python -m flows.cli run``: the ``lift`` console
script's entry point, the flow in-process, Prefect's temporary local server), timed wall clock from
start to exit. ``ratio`` is the second run's time over the first's (goal: at most 0.1).

Both runs run one copy of the code, taken once at the start (``--code head``: the committed tree,
``git archive HEAD``; ``--code worktree``: the files as they are): every stage key holds a hash of
the ``lift_core`` sources, so an edit between the two runs would make the second one recompute.

The whole demo takes about 10 minutes on 2 CPUs, so the default scale shrinks it (fewer videos, fewer
training steps; the same models, stages and pipeline). The scale used is in the output:

    python benchmarks/cached_rerun.py                     # --scale tiny (the default, the smallest): every
                                                          # stage at its test size; < 5 min for both runs on 2 cores
    python benchmarks/cached_rerun.py --scale small       # a tenth of the demo's data and steps
    python benchmarks/cached_rerun.py --scale demo        # configs/demo.yaml as it is (~10 min + the rerun)
    python benchmarks/cached_rerun.py --override critic.train.max_steps=50   # on top of the scale

Writes ``<out-dir>/cached_rerun.json`` and ``cached_rerun.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import command, machine, publish  # benchmarks/ is on sys.path

from lift_core.config import read_overrides_file

REPO = Path(__file__).resolve().parent.parent
NAME = "cached_rerun"
CONFIG = "configs/demo.yaml"

# Every stage at its smallest on the shipped demo bases (the stack tests' tiny run too).
TINY = read_overrides_file(REPO / "configs/demo-tiny.overrides")
# The demo's models and stages, a tenth of its data and training steps.
SMALL = [
    "data.synthetic.n=144", "data.synthetic.n_real=8", "data.synthetic.n_prompts=12",
    "critic.train.max_steps=60", "critic.train.checkpoint_every=30",
    "generate.max_prompts=4", "align.train.max_steps=6", "align.train.checkpoint_every=3",
    "evaluate.max_prompts=2", "evaluate.videos_per_prompt=1",
]
SCALES: dict[str, list[str]] = {"tiny": TINY, "small": SMALL, "demo": []}
SUMMARY = re.compile(r"lift-full: (\d+) tasks, (\d+) cache hits")


CODE_PATHS = ("lift_core", "data_catalog", "flows", "tasks", "configs")


def snapshot_code(dest: Path, code: str) -> str:
    """Copy the code ``lift run`` imports into ``dest``; returns what was copied (a commit or 'worktree')."""
    dest.mkdir(parents=True)
    if code == "head":
        archive = subprocess.run(["git", "archive", "--format=tar", "HEAD", *CODE_PATHS], cwd=REPO, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout.strip()
    for name in CODE_PATHS:
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return "worktree"


def lift_run(code: Path, run_root: Path, overrides: list[str], prefect_home: Path, log: Path,
             timeout: float) -> dict[str, Any]:
    """One ``lift run`` in a fresh process: wall seconds, the flow's task and cache-hit counts."""
    cmd = [sys.executable, "-m", "flows.cli", "run", "--config", CONFIG, f"run_root={run_root}", *overrides]
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("PREFECT_API_URL", None)  # Prefect's temporary local server, as a user without a server gets
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    secs = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"lift run exited {proc.returncode} (log: {log}):\n{text[-3000:]}")
    found = SUMMARY.findall(text)
    tasks, hits = (int(found[-1][0]), int(found[-1][1])) if found else (None, None)
    return {"seconds": round(secs, 2), "tasks": tasks, "cache_hits": hits}


def render_md(result: dict[str, Any]) -> str:
    f = result["figures"]
    first, second = f["first_run"], f["second_run"]
    lines = [
        "# Fully cached rerun of `lift run`",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, GPU: {result['machine']['gpu'] or 'none'}. "
        f"Code: {f['code']} (one copy for both runs).",
        "",
        f"Scale: **{f['scale']}** (`{CONFIG}` with {len(f['overrides'])} override(s)"
        + (": " + ", ".join(f"`{o}`" for o in f["overrides"]) if f["overrides"] else "") + ").",
        "",
        "Each run is the real command in a fresh process (`python -m flows.cli run`, the `lift` console "
        "script's entry point: Python start-up, imports, Prefect's temporary local server, the flow), into "
        "the same fresh run root, timed wall clock from start to exit.",
        "",
        "| run | seconds | tasks | cache hits |",
        "|---|---|---|---|",
        f"| first (computes every stage) | {first['seconds']:.1f} | {first['tasks']} | {first['cache_hits']} |",
        f"| second (the same command again) | {second['seconds']:.1f} | {second['tasks']} | {second['cache_hits']} |",
        "",
        f"**Ratio: {result['ratio']:.3f}** ({result['ratio_means']}; goal: <= 0.1).",
        "",
        "The second run's time is mostly fixed cost (start-up, imports, the temporary Prefect server, reading "
        "each stage's `_SUCCESS.json`), so the ratio falls as the first run grows: a smaller scale than the "
        "demo's gives a larger ratio than the demo would.",
        "",
        f"Command: `{result['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="tiny",
                   help="tiny (default): every stage at its test size, under 5 min for both runs on 2 cores; "
                        "small: a tenth of the demo's data and steps; demo: configs/demo.yaml unchanged")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override on top of the scale (repeatable)")
    p.add_argument("--code", choices=("head", "worktree"), default="head",
                   help="the code both runs use, copied once: the committed tree (default) or the working tree")
    p.add_argument("--work", default=None, help="where the fresh run root and PREFECT_HOME go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the run root and the logs")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per run")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)

    overrides = [*SCALES[args.scale], *args.override]
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-cached-rerun-", dir=args.work))
    run_root, home, code = work / "run", work / "prefect-home", work / "code"
    home.mkdir(parents=True)
    try:
        version = snapshot_code(code, args.code)
        first = lift_run(code, run_root, overrides, home, work / "first.log", args.timeout)
        second = lift_run(code, run_root, overrides, home, work / "second.log", args.timeout)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if second["tasks"] is not None and second["cache_hits"] != second["tasks"]:
        raise RuntimeError(f"the rerun was not fully cached: {second['cache_hits']} of {second['tasks']} tasks hit "
                           "the cache")
    figures = {"scale": args.scale, "config": CONFIG, "overrides": overrides, "code": version,
               "first_run": first, "second_run": second,
               "work": str(work) if args.keep else None}
    result = {
        "name": NAME,
        "machine": machine(),
        "figures": figures,
        "ratio": round(second["seconds"] / first["seconds"], 4),
        "ratio_means": f"wall seconds of the second `lift run` (all cached) divided by the first's, at scale "
                       f"'{args.scale}'",
        "command": command("cached_rerun.py", argv).strip(),
    }
    publish(args.out_dir, result, render_md(result))
    return result


if __name__ == "__main__":
    main()
