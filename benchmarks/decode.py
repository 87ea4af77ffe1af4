"""Benchmark: our Ray Data decode stage against bare decord processes on the same files.

In one run, on the same videos and the same machine:

- **limit**: as many bare processes as the machine has CPUs (``multiprocessing``, started and
  warmed before the clock starts), each calling ``decord.VideoReader(path, width=, height=,
  num_threads=1).get_batch(indices)`` on its share of the files. No Ray, no Prefect, no Parquet:
  the physical limit of decoding on this machine.
- **ours**: ``decode_manifest`` (the body of the decode stage) on a manifest of the same files:
  Ray Data tasks decode, write ``frames/`` Parquet shards and the quarantine, from a Ray instance
  started before the clock starts (a cluster is started once, not per stage).

Inputs are the two real CogVideoX videos of the LiFT demo (480x720, 49 frames, 8 fps), copied to
``--videos`` files. Each side runs ``--repeats`` times; the best time of each is compared.

    python benchmarks/decode.py                           # defaults: 96 videos, 8 frames at 224x224
    python benchmarks/decode.py --videos 4 --repeats 1 --out-dir /tmp/b   # smallest (the smoke test)

Writes ``<out-dir>/decode.json`` and ``decode.md``; ``ratio`` = our videos/s over the limit's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from _common import command, machine, publish  # noqa: E402  (benchmarks/ is on sys.path)

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
FIXTURES = REPO / "tests" / "fixtures" / "lift-demo"
NAME = "decode"


# --------------------------------------------------------------------------- inputs
def make_inputs(work: Path, n: int) -> list[str]:
    """``n`` distinct files: the two real 480x720 fixture videos, alternately, each with a trailing
    MP4 ``free`` box holding its index. Decoders skip ``free`` boxes, so every file decodes like its
    source, while its bytes (and so its content id, which the stage checks ``video_id`` against) are
    its own: no two rows are one video, and none is deduplicated away."""
    src = [(FIXTURES / "0.mp4").read_bytes(), (FIXTURES / "1.mp4").read_bytes()]
    (work / "videos").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        dst = work / "videos" / f"v{i:05d}.mp4"
        payload = f"{i:016d}".encode()
        dst.write_bytes(src[i % 2] + (8 + len(payload)).to_bytes(4, "big") + b"free" + payload)
        paths.append(str(dst))
    return paths


def write_manifest(paths: list[str], uri: str) -> None:
    from lift_core import storage
    from lift_core.schemas import MANIFEST_SCHEMA, rows_to_table

    rows = [{"video_id": storage.content_id(p), "uri": p, "caption": "", "source": "bench", "split": "train"}
            for p in paths]
    storage.write_table(uri, rows_to_table(rows, MANIFEST_SCHEMA))


# --------------------------------------------------------------------------- limit: bare decord
def _bare_init() -> None:
    import decord  # noqa: F401  (import before the clock starts)


def _bare_decode(job: tuple[str, int, int, int]) -> tuple[int, ...]:
    import decord
    import numpy as np

    path, k, h, w = job
    vr = decord.VideoReader(path, width=w, height=h, num_threads=1)
    idx = [int(round(x)) for x in np.linspace(0, len(vr) - 1, k)]
    return vr.get_batch(idx).asnumpy().shape


def time_bare(paths: list[str], procs: int, k: int, h: int, w: int) -> float:
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs, initializer=_bare_init) as pool:
        pool.map(_bare_decode, [(paths[0], k, h, w)] * procs)  # warm every process
        t0 = time.perf_counter()
        shapes = pool.map(_bare_decode, [(p, k, h, w) for p in paths], chunksize=1)
        elapsed = time.perf_counter() - t0
    assert all(s == (k, h, w, 3) for s in shapes)
    return elapsed


# --------------------------------------------------------------------------- ours: the decode stage
def time_ours(manifest: str, out_dir: str, k: int, h: int, w: int, batch_size: int) -> tuple[float, dict]:
    from lift_core.config import DecodeConfig
    from lift_core.video.decode_stage import decode_manifest

    shutil.rmtree(out_dir, ignore_errors=True)
    t0 = time.perf_counter()
    res = decode_manifest(manifest, out_dir, DecodeConfig(frames=k, height=h, width=w, batch_size=batch_size))
    return time.perf_counter() - t0, res["counts"]


def warm_ray(work: Path, paths: list[str], procs: int, k: int, h: int, w: int, batch_size: int) -> None:
    """Start Ray and run the stage once on a few files, so worker processes exist (as in a live cluster)."""
    from lift_core.config import RayConfig
    from lift_core.distributed.ray_runtime import ensure_ray

    ensure_ray(RayConfig(num_cpus=procs))
    warm = str(work / "warm-manifest.parquet")
    write_manifest(paths[: max(procs, 2)], warm)
    time_ours(warm, str(work / "warm-out"), k, h, w, 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=96)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--height", type=int, default=224)
    ap.add_argument("--width", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=8, help="decode.batch_size: videos per Ray task and shard")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="bare processes = Ray CPUs")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each side; the best counts")
    ap.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="lift-decode-bench-"))
    try:
        paths = make_inputs(work, args.videos)
        manifest = str(work / "manifest.parquet")
        write_manifest(paths, manifest)
        k, h, w = args.frames, args.height, args.width
        warm_ray(work, paths, args.procs, k, h, w, args.batch_size)
        bare_times, our_times, counts = [], [], {}
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both sides
            bare_times.append(time_bare(paths, args.procs, k, h, w))
            t, counts = time_ours(manifest, str(work / "out"), k, h, w, args.batch_size)
            our_times.append(t)
        if counts.get("decoded") != args.videos:
            raise RuntimeError(f"the decode stage decoded {counts} of {args.videos} videos")
        shard_bytes = sum(p.stat().st_size for p in (work / "out" / "frames").glob("*.parquet"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    bare, ours = min(bare_times), min(our_times)
    figures = {
        "videos": args.videos,
        "input": "real CogVideoX mp4s of the LiFT demo: 480x720, 49 frames, H.264",
        "decode": f"{k} frames at {h}x{w}",
        "processes_or_ray_cpus": args.procs,
        "batch_size": args.batch_size,
        "bare_decord_seconds": [round(x, 3) for x in bare_times],
        "ray_stage_seconds": [round(x, 3) for x in our_times],
        "bare_decord_videos_per_s": round(args.videos / bare, 2),
        "ray_stage_videos_per_s": round(args.videos / ours, 2),
        "frames_parquet_mb": round(shard_bytes / 1e6, 2),
        # Other work on the machine slows both sides, not equally: the ratio is meaningful near idle.
        "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    result = {
        "name": NAME,
        "machine": machine(),
        "figures": figures,
        "ratio": round(bare / ours, 3),
        "ratio_means": "Ray Data decode stage throughput (videos/s, incl. Parquet shards and quarantine) "
        "divided by the throughput of the same number of bare decord processes (best of the repeats each)",
        "command": command("decode.py", argv).strip(),
    }
    return publish(args.out_dir, result, render_md(result))


def render_md(r: dict[str, Any]) -> str:
    f = r["figures"]
    return (
        "# Decode throughput: Ray Data stage vs bare decord processes\n\n"
        f"Machine: {r['machine']['cpus']} CPUs, GPU: {r['machine']['gpu'] or 'none'}.\n"
        f"Input: {f['videos']} videos ({f['input']}), decoded to {f['decode']}, "
        f"{f['processes_or_ray_cpus']} processes / Ray CPUs, {f['batch_size']} videos per Ray task.\n\n"
        "| | seconds (each repeat) | videos/s (best) |\n|---|---|---|\n"
        f"| bare decord processes (the limit) | {f['bare_decord_seconds']} | {f['bare_decord_videos_per_s']} |\n"
        f"| our decode stage (Ray Data + Parquet) | {f['ray_stage_seconds']} | {f['ray_stage_videos_per_s']} |\n\n"
        f"**Ratio: {r['ratio']}** ({r['ratio_means']}). Goal: at least 0.8.\n\n"
        f"Frames written: {f['frames_parquet_mb']} MB of Parquet. Machine load (1 min average) before and "
        f"after: {f['load_avg_1m_before_after']}; other work on the machine slows both sides, not equally.\n\n"
        f"Rerun: `{r['command']}`\n"
    )


if __name__ == "__main__":
    main()
