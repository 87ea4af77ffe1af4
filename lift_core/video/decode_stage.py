"""Decode stage: manifest -> ``frames/`` Parquet shards + ``quarantine.parquet``, on Ray Data.

Each Ray task decodes one batch of videos and writes it as one shard, so frames never travel
through the driver (its memory stays flat) and a crashed run resumes: videos already in a shard
are skipped. Shard names hash their video ids, so a retried task overwrites its own shard.
Every video that cannot be decoded becomes a quarantine row with its error.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
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

STAGE = "decode"
PARAMS_FILE = "decode_params.json"


def output_params(params: DecodeConfig) -> dict[str, Any]:
    """The decode settings that change the frames written (not batch sizes or CPUs)."""
    return {"frames": params.frames, "height": params.height, "width": params.width, "backend": params.backend}


def decode_batch(batch: dict[str, np.ndarray], frames_dir: str, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Ray Data batch function: decode a batch, write it as one shard, return one status row per video."""
    rows, errors = [], []
    for vid, uri in zip(batch["video_id"], batch["uri"]):
        try:
            v = read_video(str(uri), params["frames"], params["height"], params["width"], backend=params["backend"])
        except VideoDecodeError as err:
            errors.append(str(err))
            continue
        except Exception as err:  # an unexpected decoder failure is still one bad input, not a dead run
            errors.append(f"{type(err).__name__}: {err}")
            continue
        rows.append(
            {"video_id": str(vid), "frames": v.frames, "frame_indices": v.frame_indices,
             "num_frames_total": v.num_frames_total, "fps": v.fps}
        )
        errors.append("")
    if rows:
        name = hashlib.sha256("|".join(r["video_id"] for r in rows).encode()).hexdigest()[:16]
        storage.write_table(storage.join(frames_dir, f"part-{name}.parquet"), frames_table(rows))
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


def _check_params(out_dir: str, params: DecodeConfig) -> None:
    """Refuse to resume into a folder decoded with other settings (shards would mix shapes)."""
    uri = storage.join(out_dir, PARAMS_FILE)
    wanted = output_params(params)
    if storage.exists(uri):
        found = storage.read_json(uri)
        if found != wanted:
            raise ValueError(f"{out_dir} holds frames decoded with {found}, not {wanted}; use another --out")
    else:
        storage.write_json(uri, wanted)


@dataclass
class DecodePlan:
    todo: list[dict[str, str]]  # videos still to decode
    bad: list[dict[str, Any]]  # quarantine rows for unusable manifest rows
    distinct: int  # distinct videos in the manifest
    resumed: int  # of those, already decoded by an earlier run
    duplicates: int  # manifest rows repeating a video_id


def plan(manifest_uri: str, done: set[str]) -> DecodePlan:
    try:
        manifest = storage.read_table(manifest_uri, columns=["video_id", "uri"])
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest not found: {manifest_uri}") from None
    except (KeyError, pa.ArrowInvalid) as err:
        raise ValueError(f"{manifest_uri} is not a manifest with video_id and uri: {err}") from None
    todo, bad, seen, duplicates = [], [], set(), 0
    for row in manifest.to_pylist():
        if not row["uri"] or not row["video_id"]:
            bad.append(quarantine_row(row["uri"], STAGE, "manifest row without uri or video_id", row["video_id"]))
            continue
        if row["video_id"] in seen:
            duplicates += 1
            continue
        seen.add(row["video_id"])
        if row["video_id"] not in done:
            todo.append({"video_id": str(row["video_id"]), "uri": str(row["uri"])})
    return DecodePlan(todo, bad, len(seen), len(seen) - len(todo), duplicates)


def decode_manifest(
    manifest_uri: str, out_dir: str, params: DecodeConfig, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Decode every video of a manifest into ``out_dir/frames``; returns ``{"outputs", "counts"}``.

    Needs Ray initialised (``ensure_ray``). Rerunning into the same folder resumes.
    """
    import ray.data

    progress = resolve(progress)
    storage.makedirs(out_dir)
    _check_params(out_dir, params)
    frames_dir = storage.join(out_dir, "frames")
    storage.makedirs(frames_dir)
    done = done_video_ids(frames_dir)
    plan_ = plan(manifest_uri, done)
    todo, bad = plan_.todo, plan_.bad
    progress(0.0, f"{plan_.resumed} videos already decoded, {len(todo)} to go")
    decoded = 0
    if todo:
        ds = ray.data.from_items(todo, override_num_blocks=min(math.ceil(len(todo) / params.batch_size), 10_000))
        # One CPU-bound operator: Ray Data's per-operator reservation would hold half the CPUs back at
        # the start (measured: one task at a time on 2 CPUs). This pipeline's own context only.
        ds.context.op_resource_reservation_enabled = False
        statuses = ds.map_batches(
            decode_batch,
            fn_kwargs={"frames_dir": frames_dir, "params": output_params(params)},
            batch_size=params.batch_size,
            batch_format="numpy",
            num_cpus=params.num_cpus,
        )
        seen = 0
        for batch in statuses.iter_batches(batch_size=None, batch_format="numpy"):
            for vid, uri, err in zip(batch["video_id"], batch["uri"], batch["error"]):
                seen += 1
                if err:
                    bad.append(quarantine_row(str(uri), STAGE, str(err), str(vid)))
                else:
                    decoded += 1
            progress(seen / len(todo), f"decoded {decoded}/{len(todo)} ({seen - decoded} failed)")
    quarantine_uri = storage.join(out_dir, "quarantine.parquet")
    storage.write_table(quarantine_uri, rows_to_table(bad, QUARANTINE_SCHEMA))
    counts = {
        "videos": plan_.distinct,
        "decoded": decoded + plan_.resumed,
        "quarantined": len(bad),
        "resumed": plan_.resumed,
        "duplicate_rows": plan_.duplicates,
    }
    return {"outputs": {"frames": frames_dir, "quarantine": quarantine_uri}, "counts": counts}


def stage_out(cfg: PipelineConfig, manifest_uri: str) -> tuple[str, str]:
    """(key, output dir) of the decode stage for this manifest."""
    # The key hashes the manifest's content and the settings that change the frames (not CPUs or batch sizes).
    key = storage.stage_key(STAGE, [storage.fingerprint_uri(manifest_uri)], storage.hash_parts(output_params(cfg.decode)))
    return key, storage.stage_dir(cfg.run_root, STAGE, key)


def run_decode(cfg: PipelineConfig, manifest_uri: str, progress: ProgressFn | None = None) -> storage.StageResult:
    """The decode stage: frames of every video of ``manifest_uri`` under ``<run_root>/decode/<key>/``."""
    from lift_core.distributed.ray_runtime import ensure_ray

    key, out = stage_out(cfg, manifest_uri)
    if done := storage.load_success(out):
        return done
    ensure_ray(cfg.ray)
    res = decode_manifest(manifest_uri, out, cfg.decode, progress)
    metrics = {"params": output_params(cfg.decode)}
    return storage.mark_success(storage.StageResult(STAGE, key, out, res["outputs"], res["counts"], metrics))


__all__ = ["decode_batch", "decode_manifest", "done_video_ids", "run_decode"]
