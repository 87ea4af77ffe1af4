"""Benchmark: batched critic scoring against LiFT's way, on the same tiny critic and the same videos.

In one run:

- **LiFT's way** (LiFT-Critic/test/run_critic_13b.py): per video and per question, decode the mp4,
  then one ``generate``, sampled at temperature 0.2, one at a time. It generates as many tokens as
  LiFT's real critic answers: the median token length of the answers in LiFT's own critic outputs
  (``tests/fixtures/lift-demo/critic_output_{13b,40b}.json``, e.g. "Good. Basically correct."),
  measured with our critic's tokenizer (answer + end-of-turn token), and stops there (the tiny random
  critic never emits EOS by itself). That gives ``ratio``. The same at LiFT's ``max_new_tokens=512``
  gives ``ratio_512``: an upper bound (a real critic stops long before).
- **ours, no rationales**: decode each video once, then the three questions of a batch of videos in
  one left-padded forward pass; rewards from the label-token probabilities.
- **ours, with rationales**: the same plus one batched greedy ``generate`` (``score.max_new_tokens``).
- **peak memory** of the Ray Data scoring pipeline (frames Parquet -> scores.parquet) for the small
  and the large video count, each in a fresh subprocess: the peak of the summed RSS of the process
  tree (driver, Ray's daemons and workers), sampled every 50 ms.

    python benchmarks/scoring.py                     # defaults: 24 videos (3 batches of 8), memory at 100 vs 1000
    python benchmarks/scoring.py --videos 1 --mem-small 4 --mem-large 8 --lift-max-new-tokens 8 --out-dir /tmp/b
    python benchmarks/scoring.py --device cuda       # GPU mode: every way on the GPU, scoring actors with 1 GPU

Writes ``<out-dir>/scoring.json`` and ``scoring.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import command, machine, publish  # noqa: E402  (benchmarks/ is on sys.path)

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
FIXTURES = REPO / "tests" / "fixtures" / "lift-demo"
CRITIC_OUTPUTS = ("critic_output_13b.json", "critic_output_40b.json")  # LiFT-Critic's real answers
NAME = "scoring"


# --------------------------------------------------------------------------- inputs
def build_critic(work: Path, adapter: str | None, model: str | None = None) -> tuple[str, str]:
    """The critic base (``model``, else the tiny one built locally) and an adapter: ``adapter`` or a
    fresh, untrained LoRA."""
    from lift_core.config import CriticConfig, PipelineConfig, TinyCriticConfig
    from lift_core.critic.builder import ensure_critic_base

    if model:
        base = model
    else:
        cfg = PipelineConfig(run_root=str(work),
                             critic=CriticConfig(model=str(work / "critic-base"), build_tiny=TinyCriticConfig()))
        base = ensure_critic_base(cfg)
    if adapter:
        return base, adapter
    out = work / "adapter"
    if not (out / "adapter_config.json").exists():
        save_fresh_adapter(base, str(out), CriticConfig(model=base).lora)
    return base, str(out)


def save_fresh_adapter(base: str, out: str, lora_cfg) -> None:
    """A LoRA adapter as the trainer saves one, before any step (scoring speed does not depend on training)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(base)
    lora = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, target_modules=list(lora_cfg.target_modules),
                      init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(out)


def fixture_videos(n: int) -> tuple[list[str], list[str]]:
    """``n`` videos cycled from LiFT's two real 480x720 demo videos, with their captions."""
    entries = json.loads((FIXTURES / "test.json").read_text())
    uris = [str(FIXTURES / entries[i % len(entries)]["video"]) for i in range(n)]
    caps = [entries[i % len(entries)]["caption"] for i in range(n)]
    return uris, caps


def lift_answer_lengths(loaded) -> list[int]:
    """Token lengths of every answer in LiFT's critic outputs, as our critic would generate them: the
    answer and its end-of-turn token (``CriticBackbone.answer_token_ids``), with our tokenizer."""
    from lift_core.domain import CRITIC_OUTPUT_KEYS

    lengths = []
    for name in CRITIC_OUTPUTS:
        for entry in json.loads((FIXTURES / name).read_text()):
            for key in CRITIC_OUTPUT_KEYS.values():
                lengths.append(len(loaded.backbone.answer_token_ids(loaded.processor, entry[key])))
    return sorted(lengths)


# --------------------------------------------------------------------------- the three ways
def lift_label(text: str) -> str:
    """LiFT's own parser (process_reward_score.py), reproduced for the baseline only: substring search."""
    return "Normal" if "Normal" in text else "Bad" if "Bad" in text else "Good"


def lift_pass(loaded, uris, captions, decode, max_new_tokens: int, temperature: float) -> dict[str, Any]:
    """One pass of LiFT's loop; every answer is exactly ``max_new_tokens`` long (``min_new_tokens`` too: a
    random critic's early EOS would make the baseline shorter than LiFT's real answers)."""
    import torch

    from lift_core.config import DIMENSIONS
    from lift_core.critic.backbone import encode_batch
    from lift_core.video.io import read_video

    tok = loaded.processor.tokenizer
    new_tokens = []
    t0, c0 = time.perf_counter(), time.process_time()
    for uri, cap in zip(uris, captions):
        for d in DIMENSIONS:
            video = read_video(uri, decode.frames, decode.height, decode.width)  # LiFT decodes per question
            inputs = encode_batch(loaded, [video.frames], [cap], [d])
            inputs = {k: (v.to(loaded.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
            with torch.inference_mode():
                out = loaded.model.generate(**inputs, do_sample=True, temperature=temperature, top_p=None,
                                            max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                            pad_token_id=tok.pad_token_id or tok.eos_token_id)
            gen = out[0, inputs["input_ids"].shape[1]:]
            new_tokens.append(int(gen.shape[0]))
            lift_label(tok.decode(gen, skip_special_tokens=True))
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "mean_generated_tokens": round(sum(new_tokens) / len(new_tokens), 1)}


def ours_pass(scorer, uris, captions, decode, rationale: bool) -> dict[str, Any]:
    """One pass of ours: decode each video once, then ``CriticScorer.score`` (batched)."""
    from lift_core.video.io import read_video

    t0, c0 = time.perf_counter(), time.process_time()
    frames = [read_video(u, decode.frames, decode.height, decode.width).frames for u in uris]  # once per video
    t1 = time.perf_counter()
    probs, _ = scorer.score(frames, list(captions), rationale=rationale)
    assert probs.shape == (len(uris), 3, 3)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "decode_seconds": t1 - t0}


def median_of(passes: list[dict[str, Any]], videos: int) -> dict[str, Any]:
    """The pass of median wall time (its figures), with the count of passes."""
    mid = sorted(passes, key=lambda p: p["seconds"])[len(passes) // 2]
    out = {"videos": videos, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in mid.items()}}
    out["videos_per_s"] = round(videos / mid["seconds"], 4)
    out["repeats"] = len(passes)
    return out


def run_interleaved(scorer, uris, captions, decode, answer_tokens: int, temperature: float,
                    repeats: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """LiFT's way, ours and ours with rationales, one pass of each in turn, ``repeats`` times: on a busy
    machine every way sees the same load. Each figure is the median pass."""
    lift, ours, ours_r = [], [], []
    for _ in range(max(1, repeats)):
        lift.append(lift_pass(scorer.loaded, uris, captions, decode, answer_tokens, temperature))
        ours.append(ours_pass(scorer, uris, captions, decode, rationale=False))
        ours_r.append(ours_pass(scorer, uris, captions, decode, rationale=True))
    n = len(uris)
    return median_of(lift, n), median_of(ours, n), median_of(ours_r, n)


# --------------------------------------------------------------------------- memory (fresh subprocesses)
def prepare_frames(work: Path, n: int, decode) -> tuple[str, str]:
    """A frames dir with ``n`` rows (the fixture frames, perturbed per video) and its manifest."""
    import numpy as np

    from lift_core import storage
    from lift_core.schemas import MANIFEST_SCHEMA, rows_to_table
    from lift_core.video.frames import frames_table
    from lift_core.video.io import read_video

    uris, caps = fixture_videos(2)
    base = [read_video(u, decode.frames, decode.height, decode.width) for u in uris]
    root = work / f"mem-{n}"
    frames_dir, manifest = root / "frames", root / "manifest.parquet"
    if manifest.exists():
        return str(manifest), str(frames_dir)
    rng = np.random.default_rng(n)
    rows, man = [], []
    for i in range(n):
        v = base[i % 2]
        noise = rng.integers(0, 8, size=v.frames.shape, dtype=np.uint8)
        vid = f"{n:05d}{i:011d}"
        rows.append({"video_id": vid, "frames": v.frames + noise, "frame_indices": v.frame_indices,
                     "num_frames_total": v.num_frames_total, "fps": v.fps})
        man.append({"video_id": vid, "uri": f"{uris[i % 2]}#{i}", "caption": caps[i % 2], "source": "generated",
                    "split": "test"})
        if len(rows) == 64 or i == n - 1:
            storage.write_table(str(frames_dir / f"part-{i:06d}.parquet"), frames_table(rows))
            rows = []
    storage.write_table(str(manifest), rows_to_table(man, MANIFEST_SCHEMA))
    return str(manifest), str(frames_dir)


class TreeRssSampler:
    """Peak of the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeRssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: score the frames of ``--manifest`` through the Ray Data pipeline."""
    import resource

    from lift_core.config import CriticConfig, DecodeConfig, PipelineConfig, RayConfig, ScoreConfig
    from lift_core.critic.score_stage import score_manifests

    gpu = args.device.startswith("cuda")
    cfg = PipelineConfig(
        run_root=args.work,
        ray=RayConfig(num_cpus=2, num_gpus=1 if gpu else None, object_store_memory=int(3e8)),
        critic=CriticConfig(model=args.base),
        decode=DecodeConfig(height=args.height, width=args.width),
        score=ScoreConfig(batch_size=args.batch_size, rows_per_shard=64, num_gpus_per_actor=1.0 if gpu else 0.0),
    )
    with TreeRssSampler() as sampler:
        t0 = time.perf_counter()
        res = score_manifests(cfg, [args.manifest], [args.frames], args.adapter, f"{args.work}/scores.parquet", model=args.base)
        secs = time.perf_counter() - t0
    import ray

    ray.shutdown()
    print("RESULT " + json.dumps({
        "videos": res["counts"]["scored"], "seconds": round(secs, 3),
        "peak_tree_rss_mb": round(sampler.peak / 2**20, 1),
        "driver_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


def run_memory(work: Path, base: str, adapter: str, n: int, decode, batch_size: int, device: str) -> dict[str, Any]:
    manifest, frames = prepare_frames(work, n, decode)
    run_dir = tempfile.mkdtemp(prefix=f"mem-{n}-", dir=work)
    cmd = [sys.executable, __file__, "--memory-child", "--work", run_dir, "--manifest", manifest, "--frames", frames,
           "--base", base, "--adapter", adapter, "--batch-size", str(batch_size), "--device", device,
           "--height", str(decode.height), "--width", str(decode.width)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"memory child for {n} videos failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    if out["videos"] != n:
        raise RuntimeError(f"memory child scored {out['videos']} of {n} videos")
    out["videos_per_s"] = round(n / out["seconds"], 3)
    return out


# --------------------------------------------------------------------------- main
def render_md(result: dict[str, Any]) -> str:
    f = result["figures"]
    lift, lift512 = f["lift_way"], f["lift_way_512"]
    lines = [
        "# Critic scoring: batched vs LiFT's way",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, GPU: {result['machine']['gpu'] or 'none'}; device `{f['device']}`. "
        f"Critic: {f['critic']} ({f['critic_params']:,} parameters), {f['videos']} real 480x720 LiFT demo videos, "
        f"{f['frames']} frames at {f['frame_size']}, batches of {f['batch_size']}.",
        "",
        f"LiFT's real answers are short: the {len(f['lift_answer_token_lengths'])} answers of LiFT's critic outputs "
        f"(`critic_output_13b.json`, `critic_output_40b.json`) are {min(f['lift_answer_token_lengths'])} to "
        f"{max(f['lift_answer_token_lengths'])} tokens long with our tokenizer (answer + end-of-turn token), "
        f"median **{f['lift_answer_tokens']}**. LiFT's way generates exactly that many tokens per answer (the tiny "
        "random critic never stops by itself, so it is stopped there). At LiFT's `max_new_tokens=512` it is an "
        "upper bound that no real answer reaches.",
        "",
        "| way | videos | videos/s | seconds | CPU seconds | speed-up vs LiFT (real answer length) |",
        "|---|---|---|---|---|---|",
    ]
    rows = (("lift_way", f"LiFT: 3x decode + 3x generate({f['lift_answer_tokens']} tokens, T=0.2)"),
            ("lift_way_512", f"LiFT, upper bound: 3x decode + 3x generate({f['lift_max_new_tokens']} tokens, T=0.2)"),
            ("ours_no_rationale", "ours: decode once, batched forward"),
            ("ours_rationale", f"ours + rationales (greedy, max_new_tokens={f['max_new_tokens']})"))
    for key, label in rows:
        lines.append(f"| {label} | {f[key]['videos']} | {f[key]['videos_per_s']:.3f} | {f[key]['seconds']:.2f} | "
                     f"{f[key]['cpu_seconds']:.2f} | {f[key]['videos_per_s'] / lift['videos_per_s']:.2f}x |")
    lines += [
        "",
        f"All ways run in one process on the same weights and videos, with the same decoder and "
        f"{f['torch_threads']} torch thread(s); ours is `CriticScorer`, the code the Ray Data actors run "
        f"(decode time included). The three ways run one pass each in turn, {f['ours_no_rationale']['repeats']} "
        "times (so a busy machine slows them alike); each figure is the median pass. "
        f"LiFT's way runs one video at a time, so its rate does not depend on the video count; the 512-token "
        f"upper bound runs on {lift512['videos']} of the videos to keep the default run short. "
        f"Speed-up in CPU time at the real answer length (less sensitive to a busy machine): "
        f"{f['speedup_no_rationale_cpu_time']}x.",
        "",
        "Memory: each size runs `score_manifests` (frames Parquet -> Ray Data actor pool -> scores.parquet) "
        "in a fresh process that starts its own local Ray; the figure is the peak of the summed RSS of that "
        "process and all its descendants (Ray's daemons, workers and the scoring actor), sampled every 50 ms. "
        "Shared pages count once per process, so the absolute figure is an over-estimate.",
        "",
        "| Ray Data scoring pipeline | videos | seconds | videos/s | peak RSS, process tree (MB) | driver max RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("memory_small", "memory_large"):
        m = f[key]
        lines.append(f"| {key} | {m['videos']} | {m['seconds']} | {m['videos_per_s']} | {m['peak_tree_rss_mb']} | "
                     f"{m['driver_maxrss_mb']} |")
    lines += [
        "",
        f"Peak memory ratio, {f['memory_large']['videos']} vs {f['memory_small']['videos']} videos: "
        f"**{f['memory_ratio']:.3f}** (acceptance: <= 1.3).",
        "",
        f"**Ratio: {result['ratio']:.2f}** ({result['ratio_means']}).",
        "",
        f"Upper bound, `ratio_512`: {result['ratio_512']:.2f} ({result['ratio_512_means']}).",
        "",
        f"Command: `{result['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=24, help="videos for the speed comparison (>= 3 batches of 8)")
    p.add_argument("--repeats", type=int, default=3,
                   help="passes of each way, interleaved (the median is reported); the 512-token bound runs once")
    p.add_argument("--lift-answer-tokens", type=int, default=None,
                   help="tokens per answer of LiFT's way (default: the median length of LiFT's real answers)")
    p.add_argument("--lift-max-new-tokens", type=int, default=512, help="LiFT's max_new_tokens: the upper bound")
    p.add_argument("--lift-512-videos", type=int, default=6,
                   help="videos of the upper-bound run (LiFT's way is one video at a time: its rate does not depend on it)")
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--max-new-tokens", type=int, default=32, help="our rationale length (score.max_new_tokens)")
    p.add_argument("--batch-size", type=int, default=8, help="videos per forward pass (score.batch_size)")
    p.add_argument("--mem-small", type=int, default=100)
    p.add_argument("--mem-large", type=int, default=1000)
    p.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU mode (every way on the GPU; "
                   "the memory runs' scoring actors reserve 1 GPU)")
    p.add_argument("--model", default=None, help="the critic base, a hub id or local dir (default: the tiny critic, built here)")
    p.add_argument("--adapter", default=None, help="a trained critic adapter (default: a fresh LoRA on the base)")
    p.add_argument("--height", type=int, default=None, help="decoded frame height (default: decode.height)")
    p.add_argument("--width", type=int, default=None, help="decoded frame width (default: decode.width)")
    p.add_argument("--work", default=None, help="scratch dir (default: a temp dir)")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (the same for every way)")
    # internal: the memory measurement's fresh subprocess
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--manifest", help=argparse.SUPPRESS)
    p.add_argument("--frames", help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from lift_core.config import CriticConfig, DecodeConfig, ScoreConfig

    torch.set_num_threads(args.threads)
    defaults = DecodeConfig()
    args.height, args.width = args.height or defaults.height, args.width or defaults.width
    if args.memory_child:
        memory_child(args)
        return {}
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device is visible")

    from lift_core.critic.scoring import CriticScorer

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scoring-"))
    work.mkdir(parents=True, exist_ok=True)
    base, adapter = build_critic(work, args.adapter, args.model)
    decode = DecodeConfig(height=args.height, width=args.width)
    uris, caps = fixture_videos(args.videos)
    scorer = CriticScorer(adapter, model=base, critic=CriticConfig(model=base),
                          score=ScoreConfig(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens),
                          frame_size=(decode.height, decode.width), device=args.device)
    lengths = lift_answer_lengths(scorer.loaded)
    answer_tokens = args.lift_answer_tokens or round(float(np.median(lengths)))
    # Warm-up: first-call allocations are not part of any way's time.
    scorer.score([np.zeros((decode.frames, decode.height, decode.width, 3), np.uint8)], [caps[0]])
    torch.manual_seed(0)
    lift, ours, ours_r = run_interleaved(scorer, uris, caps, decode, answer_tokens, args.temperature, args.repeats)
    n512 = max(1, min(args.lift_512_videos, args.videos))
    lift512 = median_of([lift_pass(scorer.loaded, uris[:n512], caps[:n512], decode, args.lift_max_new_tokens,
                                   args.temperature)], n512)
    mem_small = run_memory(work, base, adapter, args.mem_small, decode, args.batch_size, args.device)
    mem_large = run_memory(work, base, adapter, args.mem_large, decode, args.batch_size, args.device)

    figures = {
        "videos": args.videos, "frames": decode.frames, "frame_size": f"{decode.height}x{decode.width}",
        "device": args.device, "critic": args.model or "tiny (built locally)",
        "critic_params": sum(p.numel() for p in scorer.loaded.model.parameters()),
        "batch_size": args.batch_size, "torch_threads": args.threads,
        "lift_answer_token_lengths": lengths, "lift_answer_tokens": answer_tokens,
        "lift_answer_tokens_source": "median of LiFT's critic_output_13b.json + critic_output_40b.json answers, "
                                     "our tokenizer, answer + end-of-turn token",
        "lift_max_new_tokens": args.lift_max_new_tokens, "max_new_tokens": args.max_new_tokens,
        "lift_way": lift, "lift_way_512": lift512, "ours_no_rationale": ours, "ours_rationale": ours_r,
        "speedup_no_rationale": round(ours["videos_per_s"] / lift["videos_per_s"], 2),
        "speedup_rationale": round(ours_r["videos_per_s"] / lift["videos_per_s"], 2),
        "speedup_no_rationale_cpu_time": round((lift["cpu_seconds"] / lift["videos"])
                                               / (ours["cpu_seconds"] / ours["videos"]), 2),
        "speedup_no_rationale_512": round(ours["videos_per_s"] / lift512["videos_per_s"], 2),
        "memory_small": mem_small, "memory_large": mem_large,
        "memory_ratio": round(mem_large["peak_tree_rss_mb"] / mem_small["peak_tree_rss_mb"], 4),
    }
    result = {
        "name": NAME,
        "machine": machine(),
        "figures": figures,
        "ratio": figures["speedup_no_rationale"],
        "ratio_means": f"videos/s of ours without rationales divided by videos/s of LiFT's way generating "
                       f"{answer_tokens} tokens per answer (the median length of LiFT's real critic answers)",
        "ratio_512": figures["speedup_no_rationale_512"],
        "ratio_512_means": f"UPPER BOUND: the same against LiFT's way generating {args.lift_max_new_tokens} tokens "
                           "per answer (LiFT's max_new_tokens; its real answers stop far earlier)",
        "command": command("scoring.py", argv).strip(),
    }
    publish(args.out_dir, result, render_md(result))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
