"""Generation stage: prompts -> mp4 files + ``generated.parquet`` on a Ray Data actor pool.

- Each (prompt, index) pair has a fixed seed (``prompt_seed``), so a rerun, another actor count or
  another machine makes the same video; evaluation generates base and aligned with the same seeds.
- The pipeline is loaded once per actor (``lift_core.distributed.actor_pool``, ``generate.num_gpus_per_actor``).
- Rows reach the driver and are written as atomic shards; a restarted run skips every pair already in
  a shard (resume), then compacts the shards into ``generated.parquet``.
- ``generated.parquet`` has the manifest columns (``source="generated"``, ``video_id`` = content hash
  of the mp4) plus ``prompt_id``, ``seed``, ``index`` and ``tag``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from lift_core import storage
from lift_core.config import DIMENSIONS, PipelineConfig, T2VConfig
from lift_core.model_identity import t2v_base_fingerprint
from lift_core.progress import ProgressFn, count, resolve
from lift_core.schemas import MANIFEST_SCHEMA

GENERATED_SCHEMA = pa.schema(
    [
        *MANIFEST_SCHEMA,
        ("prompt_id", pa.string()),
        ("seed", pa.int64()),
        ("index", pa.int32()),
        ("tag", pa.string()),
    ]
)
SHARD_ROWS = 64  # rows per resume shard


def prompt_seed(base_seed: int, prompt_id: str, index: int) -> int:
    """The fixed seed of video ``index`` of a prompt (31 bits, stable across processes and versions)."""
    digest = hashlib.sha256(f"{int(base_seed)}:{prompt_id}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def select_prompts(prompts_uri: str, split: str | None, max_prompts: int | None) -> list[dict[str, Any]]:
    """Prompts of ``split`` (all when None) in prompt_id order, the first ``max_prompts``."""
    if not storage.exists(prompts_uri):
        raise FileNotFoundError(f"prompt table not found: {prompts_uri}")
    table = storage.read_table(prompts_uri)
    missing = {"prompt_id", "caption", "split"} - set(table.column_names)
    if missing:
        raise ValueError(f"{prompts_uri} is not a prompt table: missing columns {sorted(missing)}")
    rows = [r for r in table.select(["prompt_id", "caption", "split"]).to_pylist() if split is None or r["split"] == split]
    bad = [r["prompt_id"] for r in rows if not r["caption"] or not str(r["caption"]).strip()]
    if bad:
        raise ValueError(f"{prompts_uri}: prompts with an empty caption: {bad[:5]}")
    rows.sort(key=lambda r: r["prompt_id"])
    return rows[:max_prompts] if max_prompts is not None else rows


def plan_jobs(
    prompts: Iterable[dict[str, Any]],
    videos_per_prompt: int,
    base_seed: int,
    split: str,
    tag: str,
    subdir: str = "",
) -> list[dict[str, Any]]:
    """One job per (prompt, index) with its fixed seed and output name (``<subdir>/<prompt_id>-<index>.mp4``)."""
    jobs = []
    for p in prompts:
        for i in range(videos_per_prompt):
            name = f"{p['prompt_id']}-{i:02d}.mp4"
            jobs.append(
                {
                    "prompt_id": p["prompt_id"],
                    "caption": p["caption"],
                    "index": i,
                    "seed": prompt_seed(base_seed, p["prompt_id"], i),
                    "split": split,
                    "tag": tag,
                    "name": f"{subdir.strip('/')}/{name}" if subdir else name,
                }
            )
    return jobs


def job_key(row: dict[str, Any]) -> tuple[str, str, int]:
    return (str(row["tag"]), str(row["prompt_id"]), int(row["index"]))


class T2VGenerator:
    """Loads the pipeline once; turns job batches into mp4 files and manifest rows.

    Used in-process and as a Ray Data callable class. Videos go to ``videos_uri/<job name>``. With an
    aligned ``lora`` or ``weights``, jobs tagged ``base_tag`` run on the base model (adapter disabled,
    or the base denoiser swapped back), so one actor pool generates both sides of a comparison.
    """

    def __init__(
        self,
        model: str,
        t2v: T2VConfig | dict,
        videos_uri: str,
        lora: str | None = None,
        weights: str | None = None,
        base_tag: str | None = None,
        num_gpus: float = 0.0,
        num_threads: int | None = None,
    ):
        import torch

        from lift_core.t2v.pipeline import load_t2v

        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.t2v = t2v if isinstance(t2v, T2VConfig) else T2VConfig.model_validate(t2v)
        device = "cuda" if num_gpus and torch.cuda.is_available() else "cpu"
        self.pipe, self.spec = load_t2v(model, self.t2v.family, self.t2v.dtype, device)
        self.spec.reduce_vae_memory(self.pipe, self.t2v.vae_tiling, self.t2v.vae_slicing)
        self.spec.check_shape(self.t2v.height, self.t2v.width, self.t2v.num_frames)
        self.base_denoiser = self.spec.denoiser(self.pipe)
        self.tuned_denoiser = None
        self.has_lora = bool(lora)
        if lora and weights:
            raise ValueError("give either a LoRA or full weights, not both")
        if lora:
            from lift_core.t2v.pipeline import LORA_WEIGHTS_FILE

            self.spec.load_lora(self.pipe, storage.local_dir(lora, LORA_WEIGHTS_FILE))
        if weights:
            import os

            from lift_core.t2v.pipeline import FULL_WEIGHTS_SUBDIR

            path = os.path.join(storage.local_dir(weights, f"{FULL_WEIGHTS_SUBDIR}/config.json"), FULL_WEIGHTS_SUBDIR)
            self.tuned_denoiser = self.spec.load_denoiser(path, self.t2v.dtype).to(device)
        self.base_tag = base_tag
        self.device = device
        self.videos_uri = videos_uri
        self._use(aligned=True)

    def _use(self, aligned: bool) -> None:
        """Switch between the aligned model and the base one."""
        if self.has_lora:
            self.pipe.enable_lora() if aligned else self.pipe.disable_lora()
        if self.tuned_denoiser is not None:
            self.spec.set_denoiser(self.pipe, self.tuned_denoiser if aligned else self.base_denoiser)

    def generate(self, captions: list[str], seeds: list[int]) -> np.ndarray:
        """uint8 ``[B, T, H, W, 3]`` videos, one per (caption, seed): the family's ``generate``."""
        import torch

        t = self.t2v
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        return self.spec.generate(
            self.pipe, list(captions), generators,
            height=t.height, width=t.width, num_frames=t.num_frames, num_inference_steps=t.num_inference_steps,
            guidance_scale=t.guidance_scale, max_sequence_length=t.max_sequence_length,
        )

    def run_jobs(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from lift_core.video.io import encode_mp4

        rows = []
        for is_base in (True, False):
            group = [j for j in jobs if (self.base_tag is not None and j["tag"] == self.base_tag) == is_base]
            if not group:
                continue
            self._use(aligned=not is_base)
            videos = self.generate([j["caption"] for j in group], [j["seed"] for j in group])
            for job, frames in zip(group, videos):
                data = encode_mp4(frames, fps=self.t2v.fps)
                uri = storage.join(self.videos_uri, job["name"])
                storage.write_bytes_atomic(uri, data)
                rows.append(
                    {
                        "video_id": storage.sha256_hex(data)[:16],
                        "uri": uri,
                        "caption": job["caption"],
                        "source": "generated",
                        "split": job["split"],
                        **{f"label_{d}": None for d in DIMENSIONS},
                        **{f"reason_{d}": None for d in DIMENSIONS},
                        "prompt_id": job["prompt_id"],
                        "seed": int(job["seed"]),
                        "index": int(job["index"]),
                        "tag": job["tag"],
                    }
                )
        return rows

    def __call__(self, batch: pa.Table) -> pa.Table:
        jobs = batch.to_pylist() if isinstance(batch, pa.Table) else pa.Table.from_pydict(batch).to_pylist()
        return pa.Table.from_pylist(self.run_jobs(jobs), schema=GENERATED_SCHEMA)


# --------------------------------------------------------------------------- resumable output
def _parts_dir(out_uri: str) -> str:
    return storage.join(out_uri, "generated.parts")


def done_jobs(out_uri: str) -> set[tuple[str, str, int]]:
    """(tag, prompt_id, index) of the videos already written (in shards of a previous attempt)."""
    fs, path = storage.fs_and_path(_parts_dir(out_uri))
    if not fs.exists(path):
        return set()
    done: set[tuple[str, str, int]] = set()
    for p in sorted(fs.find(path)):
        if p.endswith(".parquet") and "/." not in p[len(path):]:
            t = storage.read_table(storage.to_uri(fs, p), columns=["tag", "prompt_id", "index"])
            done.update(job_key(r) for r in t.to_pylist())
    return done


def compact(out_uri: str, generated_uri: str) -> pa.Table:
    """All shards -> one table sorted by (tag, prompt_id, index), one row per job (the last written wins)."""
    fs, path = storage.fs_and_path(_parts_dir(out_uri))
    tables = []
    if fs.exists(path):
        for p in sorted(fs.find(path)):
            if p.endswith(".parquet") and "/." not in p[len(path):]:
                tables.append(storage.read_table(storage.to_uri(fs, p)).cast(GENERATED_SCHEMA))
    rows: dict[tuple[str, str, int], dict] = {}
    for t in tables:
        for r in t.to_pylist():
            rows[job_key(r)] = r
    table = pa.Table.from_pylist([rows[k] for k in sorted(rows)], schema=GENERATED_SCHEMA)
    storage.write_table(generated_uri, table)
    return table


def generate_jobs(
    cfg: PipelineConfig,
    jobs: list[dict[str, Any]],
    out_uri: str,
    *,
    model: str,
    lora: str | None = None,
    weights: str | None = None,
    base_tag: str | None = None,
    progress: ProgressFn | None = None,
) -> tuple[pa.Table, int]:
    """Run the jobs not yet done on a Ray Data actor pool; return (compacted table, videos generated now).

    Jobs tagged ``base_tag`` run on the base model when ``lora``/``weights`` are given.
    """
    progress = resolve(progress)
    generated_uri = storage.join(out_uri, "generated.parquet")
    done = done_jobs(out_uri)
    todo = [j for j in jobs if job_key(j) not in done]
    progress(0.0, f"{len(jobs)} videos: {len(jobs) - len(todo)} already generated, {len(todo)} to generate")
    written = 0
    if todo:
        from lift_core.distributed.actor_pool import ActorPool, map_on_actor_pool, shard_name, shard_run_id

        g = cfg.generate
        out = map_on_actor_pool(
            pa.Table.from_pylist(todo),
            T2VGenerator,
            {
                "model": model,
                "t2v": cfg.t2v.model_dump(mode="json"),
                "videos_uri": storage.join(out_uri, "videos"),
                "lora": lora,
                "weights": weights,
                "base_tag": base_tag,
                "num_gpus": g.num_gpus_per_actor,
            },
            pool=ActorPool(g.num_actors, g.num_cpus_per_actor, g.num_gpus_per_actor),
            batch_size=g.batch_size,
            expected_rows=len(todo),
            what="generation",
            result_rows=SHARD_ROWS,
            ray_config=cfg.ray,
        )
        parts = _parts_dir(out_uri)
        # Names sort in time order across runs, so in compaction the last written row of a job wins.
        run = shard_run_id()
        for seq, batch in enumerate(out):
            if batch.num_rows == 0:
                continue
            storage.write_table(storage.join(parts, shard_name(run, seq)), batch.cast(GENERATED_SCHEMA))
            written += batch.num_rows
            count(progress, written, len(todo), "videos", "generated")
    table = compact(out_uri, generated_uri)
    return table, written


def generate_stage_dir(
    cfg: PipelineConfig, prompts_uri: str, split: str, lora_uri: str | None, tag: str
) -> tuple[str, str]:
    """(key, output dir) of the generate stage for these inputs."""
    upstream = [storage.fingerprint_uri(prompts_uri)] + ([storage.fingerprint_uri(lora_uri)] if lora_uri else [])
    extra = {"t2v": cfg.t2v.fingerprint(), "base": t2v_base_fingerprint(cfg), "split": split, "tag": tag,
             "lora": bool(lora_uri)}
    key = storage.stage_key("generate", upstream, cfg.generate.fingerprint(), extra)
    return key, storage.abspath_if_local(storage.stage_dir(cfg.run_root, "generate", key))


def run_generate(
    cfg: PipelineConfig,
    prompts_uri: str,
    split: str = "train",
    lora_uri: str | None = None,
    tag: str = "base",
    progress: ProgressFn | None = None,
) -> storage.StageResult:
    """The ``generate`` stage: ``generated`` (manifest-format Parquet) and ``videos`` (mp4 folder)."""
    from lift_core.t2v.builder import ensure_t2v_base
    from lift_core.t2v.spec import get_spec

    get_spec(cfg.t2v.family).check_shape(cfg.t2v.height, cfg.t2v.width, cfg.t2v.num_frames)
    key, out = generate_stage_dir(cfg, prompts_uri, split, lora_uri, tag)
    if done := storage.load_success(out):
        return done
    model = ensure_t2v_base(cfg)
    prompts = select_prompts(prompts_uri, split, cfg.generate.max_prompts)
    if not prompts:
        raise ValueError(f"no prompts of split {split!r} in {prompts_uri}")
    jobs = plan_jobs(prompts, cfg.generate.videos_per_prompt, cfg.generate.seed, split, tag)
    table, generated_now = generate_jobs(cfg, jobs, out, model=model, lora=lora_uri, progress=progress)
    outputs = {"generated": storage.join(out, "generated.parquet"), "videos": storage.join(out, "videos")}
    counts = {"prompts": len(prompts), "videos": table.num_rows, "generated_now": generated_now,
              "resumed": table.num_rows - generated_now}
    metrics = {"split": split, "tag": tag, "model": model, "lora": lora_uri}
    return storage.mark_success(storage.StageResult("generate", key, out, outputs, counts, metrics))


__all__ = [
    "GENERATED_SCHEMA",
    "T2VGenerator",
    "compact",
    "done_jobs",
    "job_key",
    "generate_jobs",
    "generate_stage_dir",
    "plan_jobs",
    "prompt_seed",
    "run_generate",
    "select_prompts",
]
