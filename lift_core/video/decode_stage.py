"""Decode stage: manifest -> ``frames/`` Parquet shards + ``quarantine.parquet``, on Ray Data.

Each Ray task decodes one batch of videos and writes it as one shard, so frames never travel
through the driver (its memory stays flat) and a crashed run resumes: videos already in a shard
are skipped. Shard names hash their video ids, so a retried task overwrites its own shard.
Every video that cannot be decoded becomes a quarantine row with its error, and so does every row
whose file is not the video its ``video_id`` names (checked against the file's content before
decoding; relative URIs resolve against the manifest, never the working directory:
``lift_core.data.manifest``).

Shards are not trusted blindly: a resume drops shards it cannot read, and a cache hit whose
``_SUCCESS.json`` no longer matches the shards (one truncated, deleted or, with verification, altered)
drops the damaged ones and decodes their videos again. A full disk or missing credentials stop the
run with one line naming the path (``storage.ResourceError``), never one quarantine row per video.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lift_core import storage
from lift_core.config import DecodeConfig, PipelineConfig
from lift_core.data.inputs import InputLimits
from lift_core.data.manifest import checked_video_source, read_manifest
from lift_core.progress import ProgressFn, count, resolve
from lift_core.schemas import QUARANTINE_SCHEMA, quarantine_row, rows_to_table
from lift_core.video.frames import frames_table, shard_files
from lift_core.video.io import VideoDecodeError, read_video

STAGE = "decode"
PARAMS_FILE = "decode_params.json"
QUARANTINE_FILE = "quarantine.parquet"

log = logging.getLogger("lift.decode")


def output_params(params: DecodeConfig) -> dict[str, Any]:
    """The decode settings that change the frames written (not batch sizes or CPUs)."""
    return {"frames": params.frames, "height": params.height, "width": params.width, "backend": params.backend}


def decode_batch(
    batch: dict[str, np.ndarray], frames_dir: str, params: dict[str, Any], limits: InputLimits | None = None
) -> dict[str, np.ndarray]:
    """Ray Data batch function: decode a batch, write it as one shard, return one status row per video.

    Each file is checked first (``checked_video_source``): a regular file within ``limits`` whose
    content id is the row's ``video_id``. ``error`` is a bad input's reason (quarantined). ``fatal`` carries a
    resource failure (disk full, missing credentials) as data rather than as an exception: Ray Data
    would wrap an exception into a ``UserCodeException`` that keeps the cause only in its log files.
    """
    limits = limits or InputLimits()
    rows, errors = [], []
    n = len(batch["video_id"])

    def fatal(err: storage.ResourceError) -> dict[str, np.ndarray]:
        encoded = json.dumps([err.path, err.reason, err.action])
        return {"video_id": batch["video_id"], "uri": batch["uri"], "error": np.array([""] * n, dtype=object),
                "fatal": np.array([encoded] * n, dtype=object)}

    for vid, uri in zip(batch["video_id"], batch["uri"]):
        try:
            src = checked_video_source(str(vid), str(uri), limits)
            v = read_video(src, params["frames"], params["height"], params["width"], backend=params["backend"])
        except VideoDecodeError as err:
            errors.append(str(err))
            continue
        except Exception as err:  # an unexpected decoder failure is still one bad input, not a dead run
            if resource := storage.as_resource_error(err, str(uri), "reading", writing=False):
                return fatal(resource)
            errors.append(f"{type(err).__name__}: {err}")
            continue
        rows.append(
            {"video_id": str(vid), "frames": v.frames, "frame_indices": v.frame_indices,
             "num_frames_total": v.num_frames_total, "fps": v.fps}
        )
        errors.append("")
    if rows:
        name = hashlib.sha256("|".join(r["video_id"] for r in rows).encode()).hexdigest()[:16]
        try:
            storage.write_table(storage.join(frames_dir, f"part-{name}.parquet"), frames_table(rows))
        except storage.ResourceError as err:
            return fatal(err)
    return {"video_id": batch["video_id"], "uri": batch["uri"], "error": np.array(errors, dtype=object),
            "fatal": np.array([""] * n, dtype=object)}


def done_video_ids(frames_dir: str, damaged: Mapping[str, str] | None = None) -> set[str]:
    """Video ids in the intact shards of an earlier (possibly crashed) run.

    A shard that cannot be read (truncated by a crash or a full disk, not Parquet), or that
    ``damaged`` names (``{uri: why}``: files that failed the ``_SUCCESS.json`` check), is removed and
    logged, so its videos are decoded again instead of breaking every later reader.
    """
    if not storage.exists(frames_dir):
        return set()
    fs, root = storage.fs_and_path(frames_dir)
    root = root.rstrip("/")
    # Only files inside this frames folder: a problem about the folder itself removes nothing.
    damaged_paths = {storage.fs_and_path(u)[1]: why for u, why in (damaged or {}).items()}
    damaged_paths = {p: why for p, why in damaged_paths.items() if p.startswith(root + "/")}
    done: set[str] = set()
    for uri in shard_files(frames_dir):
        path = storage.fs_and_path(uri)[1]
        if path in damaged_paths:
            reason = damaged_paths[path]
        else:
            try:
                done.update(pq.read_table(path, filesystem=fs, columns=["video_id"]).column("video_id").to_pylist())
                continue
            except Exception as err:  # pyarrow raises ArrowInvalid or OSError for a truncated file
                reason = f"unreadable ({type(err).__name__}: {err})"
        log.warning("frames shard %s: %s; removed, its videos are decoded again", uri, reason)
        fs.rm(path)
    for path, reason in damaged_paths.items():  # not a shard (another suffix) but not ours either
        if fs.isfile(path):
            log.warning("%s in the frames folder: %s; removed", path, reason)
            fs.rm(path)
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
        manifest = read_manifest(manifest_uri, columns=["video_id", "uri"])  # relative URIs resolved
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
    manifest_uri: str, out_dir: str, params: DecodeConfig, progress: ProgressFn | None = None,
    damaged: Mapping[str, str] | None = None, limits: InputLimits | None = None,
) -> dict[str, Any]:
    """Decode every video of a manifest into ``out_dir/frames``; returns ``{"outputs", "counts"}``.

    A row whose file is refused or holds another video than its ``video_id`` is quarantined
    (``decode_batch``); ``limits`` are the config's ``data.*`` bounds.

    Needs Ray initialised (``ensure_ray``). Rerunning into the same folder resumes from its intact
    shards; ``damaged`` (``{uri: why}``) names shards to drop and decode again (``done_video_ids``). Raises
    ``storage.ResourceError`` when storage fails (disk full, missing credentials).
    """
    import ray.data

    progress = resolve(progress)
    storage.makedirs(out_dir)
    _check_params(out_dir, params)
    frames_dir = storage.join(out_dir, "frames")
    storage.makedirs(frames_dir)
    done = done_video_ids(frames_dir, damaged)
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
            fn_kwargs={"frames_dir": frames_dir, "params": output_params(params), "limits": limits or InputLimits()},
            batch_size=params.batch_size,
            batch_format="numpy",
            num_cpus=params.num_cpus,
        )
        seen = 0
        for batch in statuses.iter_batches(batch_size=None, batch_format="numpy"):
            if failed := next((f for f in batch["fatal"] if f), None):
                raise storage.ResourceError(*json.loads(failed))
            for vid, uri, err in zip(batch["video_id"], batch["uri"], batch["error"]):
                seen += 1
                if err:
                    bad.append(quarantine_row(str(uri), STAGE, str(err), str(vid)))
                else:
                    decoded += 1
            count(progress, seen, len(todo), "videos", f"decoded, {seen - decoded} failed")
    quarantine_uri = storage.join(out_dir, QUARANTINE_FILE)
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
    # The key hashes the manifest's content and the settings that change the frames (not CPUs or batch
    # sizes), and the bounds that decide which files are read.
    limits = InputLimits.from_config(cfg.data)
    key = storage.stage_key(STAGE, [storage.fingerprint_uri(manifest_uri)],
                            storage.hash_parts(output_params(cfg.decode), limits.max_video_bytes))
    return key, storage.stage_dir(cfg.run_root, STAGE, key)


class MissingFramesError(RuntimeError):
    """Videos that the decode stage neither decoded nor quarantined: its frames output lost them."""


def missing_frames_reasons(frames_uris: Iterable[str], missing: list[dict[str, Any]]) -> dict[str, str] | None:
    """``video_id -> why it has no frames`` (the decode quarantine's error) for manifest rows ``missing``.

    None when a frames URI is not a decode stage's ``frames`` folder (no ``decode_params.json``
    beside it): nothing can say why, and the caller keeps a generic reason. A video that no decode
    stage quarantined raises ``MissingFramesError``: its shard was lost, and skipping it would shrink
    every later result without a word.
    """
    frames_uris = list(frames_uris)
    quarantines = []
    for frames in frames_uris:
        out_dir = frames.rstrip("/").rsplit("/", 1)[0] if "/" in frames.rstrip("/") else ""
        if not out_dir or not storage.exists(storage.join(out_dir, PARAMS_FILE)):
            return None
        quarantines.append(storage.join(out_dir, QUARANTINE_FILE))
    errors: dict[str, str] = {}
    for uri in quarantines:
        if storage.exists(uri):
            for row in storage.read_table(uri, columns=["video_id", "error"]).to_pylist():
                if row["video_id"]:
                    errors.setdefault(row["video_id"], row["error"])
    unexplained = [r for r in missing if r["video_id"] not in errors]
    if unexplained:
        first = unexplained[0]
        raise MissingFramesError(
            f"{len(unexplained)} video(s) have no decoded frames and no row in the decode quarantine "
            f"({', '.join(quarantines)}), e.g. {first['video_id']} ({first.get('uri')}): the frames under "
            f"{', '.join(frames_uris)} are incomplete (a shard deleted or lost); rerun decode to decode them again"
        )
    return {r["video_id"]: f"no decoded frames: the decode stage quarantined it ({errors[r['video_id']]})"
            for r in missing}


def run_decode(cfg: PipelineConfig, manifest_uri: str, progress: ProgressFn | None = None) -> storage.StageResult:
    """The decode stage: frames of every video of ``manifest_uri`` under ``<run_root>/decode/<key>/``."""
    from lift_core.distributed.ray_runtime import ensure_ray

    key, out = stage_out(cfg, manifest_uri)
    done, problems = storage.check_success(out)
    if done:
        return done
    if problems:
        # Repair in place: intact shards stay, damaged ones are decoded again. The stale marker goes
        # first, so a crash during the repair never leaves it vouching for files that changed.
        fs, path = storage.fs_and_path(storage.join(out, storage.SUCCESS_FILE))
        fs.rm(path)
    ensure_ray(cfg.ray)
    damaged = {p.uri: p.reason for p in problems if p.output == "frames"}
    res = decode_manifest(manifest_uri, out, cfg.decode, progress, damaged=damaged,
                          limits=InputLimits.from_config(cfg.data))
    metrics = {"params": output_params(cfg.decode)}
    return storage.mark_success(storage.StageResult(STAGE, key, out, res["outputs"], res["counts"], metrics))


__all__ = ["MissingFramesError", "decode_batch", "decode_manifest", "done_video_ids", "missing_frames_reasons",
           "run_decode"]
