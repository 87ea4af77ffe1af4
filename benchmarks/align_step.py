"""Benchmark: an alignment step with cached latents + text embeddings vs LiFT's way (encode every step).

In one run, on the same tiny CogVideoX-architecture model, the same videos and the same machine:

- **cached (ours)**: each video was VAE-encoded once and each caption T5-encoded once into the
  safetensors cache (``lift_core.t2v.cache.TensorCache``); a step reads the latent distributions and
  embeddings from the cache, samples latents, and runs LiFT's reward-weighted loss, backward and the
  optimizer step (``lift_core.t2v.align.train_step``).
- **LiFT's way**: a step VAE-encodes the batch's (already decoded) frames and T5-encodes its captions,
  then runs the same ``train_step``. Video decoding is left out of both sides.

The sides alternate step by step (so drifts in machine load hit both); the median step time of each is
compared. The one-off cost of filling the cache is reported too.

    python benchmarks/align_step.py                      # defaults: 64x64, 17 frames, batch 2, 12 steps
    python benchmarks/align_step.py --height 32 --width 32 --frames 9 --steps 2 --out-dir /tmp/b   # smoke

Writes ``<out-dir>/align_step.json`` and ``align_step.md``; ``ratio`` = LiFT-way step time / cached step time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import command, machine, publish  # noqa: E402  (benchmarks/ is on sys.path)

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
NAME = "align_step"


def make_videos(n: int, frames: int, height: int, width: int, seed: int = 0):
    """Moving bright squares on a dark background (uint8 [T, H, W, 3]) with captions."""
    import numpy as np

    rng = np.random.RandomState(seed)
    videos, captions = [], []
    for i in range(n):
        v = np.full((frames, height, width, 3), 20, np.uint8)
        colour = rng.randint(80, 255, 3)
        size = max(2, height // 4)
        for t in range(frames):
            y = int((height - size) * t / max(frames - 1, 1))
            x = int((width - size) * ((i * 0.3) % 1.0))
            v[t, y : y + size, x : x + size] = colour
        videos.append(v)
        captions.append(f"one square moving down, video {i}")
    return videos, captions


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--frames", type=int, default=17, help="4k+1")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    import torch

    from lift_core.config import AlignConfig, T2VConfig, TinyT2VConfig
    from lift_core.t2v.align import add_trainable, train_step
    from lift_core.t2v.builder import build_tiny_t2v
    from lift_core.t2v.cache import TensorCache, caption_key
    from lift_core.t2v.loss import make_batch, sample_seed
    from lift_core.t2v.spec import frames_to_pixels, get_spec

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="lift-align-bench-"))
    try:
        t2v = T2VConfig(model=str(work / "model"), height=args.height, width=args.width, num_frames=args.frames,
                        max_sequence_length=32)
        build_tiny_t2v(t2v.model, TinyT2VConfig(), t2v)
        spec = get_spec("cogvideox")
        pipe = spec.load_pipeline(t2v.model)  # one model for both sides
        align = AlignConfig()
        model = spec.denoiser(pipe)
        params = add_trainable(spec, model, "lora", align.lora)
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        videos, captions = make_videos(args.videos, args.frames, args.height, args.width)
        ids = [f"v{i:04d}" for i in range(args.videos)]

        # The cache, filled once (what the align stage's CacheEncoder does).
        t0 = time.perf_counter()
        latents, texts = TensorCache(str(work / "cache" / "latents")), TensorCache(str(work / "cache" / "text"))
        latents.put_many({vid: spec.encode_video_dist(pipe, frames_to_pixels(v))[0] for vid, v in zip(ids, videos)})
        texts.put_many({caption_key(c): e for c, e in zip(captions, spec.encode_text(pipe, captions, 32))})
        cache_fill_s = time.perf_counter() - t0
        latents, texts = TensorCache(latents.uri), TensorCache(texts.uri)  # readers start cold, from disk

        def rows(step: int) -> list[int]:
            return [(step * args.batch + j) % args.videos for j in range(args.batch)]

        def cached_step(step: int) -> float:
            t = time.perf_counter()
            idx = rows(step)
            dists = latents.get_many([ids[i] for i in idx])
            embeds = texts.get_many([caption_key(captions[i]) for i in idx])
            batch = make_batch(spec, pipe, [dists[ids[i]] for i in idx], [embeds[caption_key(captions[i])] for i in idx],
                               [1.0] * len(idx), [sample_seed(0, step * args.batch + j) for j in range(len(idx))])
            train_step(spec, pipe, model, params, optimizer, batch, 1.0)
            return time.perf_counter() - t

        def lift_step(step: int) -> float:
            t = time.perf_counter()
            idx = rows(step)
            dists = spec.encode_video_dist(pipe, frames_to_pixels([videos[i] for i in idx]))
            embeds = spec.encode_text(pipe, [captions[i] for i in idx], 32)
            batch = make_batch(spec, pipe, list(dists), list(embeds), [1.0] * len(idx),
                               [sample_seed(0, step * args.batch + j) for j in range(len(idx))])
            train_step(spec, pipe, model, params, optimizer, batch, 1.0)
            return time.perf_counter() - t

        cached_step(0), lift_step(0)  # warm-up (allocator, first-call overheads)
        cached_times, lift_times = [], []
        for step in range(1, args.steps + 1):
            cached_times.append(cached_step(step))
            lift_times.append(lift_step(step))
        n_params = sum(p.numel() for p in model.parameters())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cached, lift = statistics.median(cached_times), statistics.median(lift_times)
    figures = {
        "model": f"tiny CogVideoX (transformer {n_params} params incl. LoRA r={align.lora.r}), VAE {list(TinyT2VConfig().vae_block_out_channels)}",
        "video": f"{args.frames} frames at {args.height}x{args.width}",
        "batch": args.batch,
        "steps_per_side": args.steps,
        "torch_threads": args.threads,
        "cached_step_s_median": round(cached, 5),
        "lift_way_step_s_median": round(lift, 5),
        "cached_step_s": [round(x, 5) for x in cached_times],
        "lift_way_step_s": [round(x, 5) for x in lift_times],
        "cache_fill_s_once": round(cache_fill_s, 4),
        "videos_in_cache": args.videos,
    }
    result = {
        "name": NAME,
        "machine": machine(),
        "figures": figures,
        "ratio": round(lift / cached, 3),
        "ratio_means": "median step time of LiFT's way (VAE + T5 encoding every step) divided by the median step "
        "time with cached latents + text embeddings (same model, same batches, alternating steps)",
        "command": command("align_step.py", argv).strip(),
    }
    return publish(args.out_dir, result, render_md(result))


def render_md(r: dict[str, Any]) -> str:
    f = r["figures"]
    return (
        "# Alignment step: cached latents + embeddings vs LiFT's way (encode every step)\n\n"
        f"Machine: {r['machine']['cpus']} CPUs, GPU: {r['machine']['gpu'] or 'none'}; torch threads: {f['torch_threads']}.\n"
        f"Model: {f['model']}. Videos: {f['video']}, batch {f['batch']}, {f['steps_per_side']} timed steps per side.\n\n"
        "| | median step (s) |\n|---|---|\n"
        f"| LiFT's way: VAE + T5 encoding every step | {f['lift_way_step_s_median']} |\n"
        f"| ours: cached latents + text embeddings | {f['cached_step_s_median']} |\n\n"
        f"**Ratio: {r['ratio']}** ({r['ratio_means']}). Goal: at least 3.\n\n"
        f"Filling the cache once for {f['videos_in_cache']} videos took {f['cache_fill_s_once']} s.\n\n"
        f"Rerun: `{r['command']}`\n"
    )


if __name__ == "__main__":
    main()
