"""Decode stage: manifest -> ``frames/`` Parquet shards + ``quarantine.parquet``, on Ray Data.

Each Ray task decodes a batch of videos and writes its own shard, so frames never travel through
the driver (memory stays flat) and a crashed run resumes: videos already in a shard are skipped.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lift_core import storage
from lift_core.config import DecodeConfig, PipelineConfig
from lift_core.progress import ProgressFn, resolve
from lift_core.schemas import QUARANTINE_SCHEMA, quarantine_row, rows_to_table
from lift_core.video.frames import frames_table, shard_files
from lift_core.video.io import VideoDecodeError, read_video


class DecodeBatch:
    """Ray Data batch function: decode, write one shard, return one small status row per video."""

    def __init__(self, frames_dir: str, params: DecodeConfig):
        self.frames_dir = frames_dir
        self.params = params

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        p = self.params
        rows, errors = [], []
        for vid, uri in zip(batch["video_id"], batch["uri"]):
            try:
                v = read_video(str(uri), p.frames, p.height, p.width, backend=p.backend)
                rows.append(
                    {"video_id": str(vid), "frames": v.frames, "frame_indices": v.frame_indices,
                     "num_frames_total": v.num_frames_total, "fps": v.fps}
                )
                errors.append("")
            except VideoDecodeError as err:
                errors.append(str(err))
            except Exception as err:  # an unexpected decoder failure is still one bad input, not a dead run
                errors.append(f"{type(err).__name__}: {err}")
        if rows:
            name = hashlib.sha256("|".join(r["video_id"] for r in rows).encode()).hexdigest()[:16]
            storage.write_table(storage.join(self.frames_dir, f"part-{name}.parquet"), frames_table(rows))
        return {"video_id": batch["video_id"], "uri": batch["uri"], "error": np.array(errors, dtype=object)}


def done_video_ids(frames_dir: str) -> set[str]:
    """Video ids already written by a previous (possibly crashed) run."""
    if not storage.exists(frames_dir):
        return set()
    done: set[str] = set()
    for uri in shard_files(frames_dir):
        fs, path = storage.fs_and_path(uri)
        done.update(pq.read_table(path, filesystem=fs, columns=["video_id"]).column("video_id").to_pylist())
    return done


def decode_manifest(
    manifest_uri: str, out_dir: str, params: DecodeConfig, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Decode every video of a manifest into ``out_dir/frames``; returns outputs and counts."""
    import ray.data

    progress = resolve(progress)
    manifest = storage.read_table(manifest_uri, columns=["video_id", "uri"])
    frames_dir = storage.join(out_dir, "frames")
    storage.makedirs(frames_dir)
    done = done_video_ids(frames_dir)
    todo = [r for r in manifest.to_pylist() if r["video_id"] not in done]
    progress(0.0, f"{len(done)} videos already decoded, {len(todo)} to go")
    statuses: list[dict[str, Any]] = []
    if todo:
        ds = ray.data.from_items(todo, override_num_blocks=max(1, min(len(todo) // params.batch_size, 64)))
        out = ds.map_batches(
            DecodeBatch,
            fn_constructor_args=(frames_dir, params),
            batch_size=params.batch_size,
            num_cpus=params.num_cpus,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(_cpus() // params.num_cpus))),
        )
        for batch in out.iter_batches(batch_size=params.batch_size, batch_format="numpy"):
            statuses.extend(
                {"video_id": str(v), "uri": str(u), "error": str(e)}
                for v, u, e in zip(batch["video_id"], batch["uri"], batch["error"])
            )
            progress(len(statuses) / len(todo), f"decoded {len(statuses)}/{len(todo)}")
    bad = [quarantine_row(s["uri"], "decode", s["error"], s["video_id"]) for s in statuses if s["error"]]
    quarantine_uri = storage.join(out_dir, "quarantine.parquet")
    storage.write_table(quarantine_uri, rows_to_table(bad, QUARANTINE_SCHEMA))
    decoded = len(done) + sum(1 for s in statuses if not s["error"])
    return {
        "outputs": {"frames": frames_dir, "quarantine": quarantine_uri},
        "counts": {"videos": manifest.num_rows, "decoded": decoded, "quarantined": len(bad), "resumed": len(done)},
    }


def _cpus() -> float:
    import ray

    return max(1.0, ray.available_resources().get("CPU", 1.0))


def run_decode(cfg: PipelineConfig, manifest_uri: str, progress: ProgressFn | None = None) -> storage.StageResult:
    from lift_core.distributed.ray_runtime import ensure_ray

    key = storage.stage_key("decode", [storage.fingerprint_uri(manifest_uri)], cfg.decode.fingerprint())
    out = storage.stage_dir(cfg.run_root, "decode", key)
    if done := storage.load_success(out):
        return done
    ensure_ray(cfg.ray)
    res = decode_manifest(manifest_uri, out, cfg.decode, progress)
    return storage.mark_success(storage.StageResult("decode", key, out, res["outputs"], res["counts"]))


__all__ = ["DecodeBatch", "decode_manifest", "run_decode", "pa"]
