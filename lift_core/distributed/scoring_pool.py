"""Scoring on Ray Data: frames Parquet -> critic actor pool -> score shards -> one ``scores.parquet``.

- The critic is loaded once per actor (``lift_core.distributed.actor_pool``), with ``score.num_gpus_per_actor``.
- Frames stream from Parquet through the actors; only the small score rows reach the driver, which
  writes them as atomic shards of ``score.rows_per_shard`` rows. Memory stays flat as videos grow.
- Resume: shards of a killed run stay; a restart skips every (``video_id``, ``critic_id``) already in
  the output or its shards. Compaction streams shards into one file, one row per pair (the newest).
"""

from __future__ import annotations

import uuid
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.progress import ProgressFn, resolve
from lift_core.schemas import SCORES_SCHEMA, quarantine_row

PAIR = ("video_id", "critic_id")


def shards_dir_for(scores_uri: str) -> str:
    """Where the shards of ``scores_uri`` live while a run is in progress (a sibling folder)."""
    return f"{scores_uri}.parts"


def _parquet_files(uri: str) -> list[str]:
    fs, path = storage.fs_and_path(uri)
    if not fs.exists(path):
        return []
    if not fs.isdir(path):
        return [uri]
    # Names starting with "." are temporary files of unfinished atomic writes.
    names = sorted(p for p in fs.find(path) if p.endswith(".parquet") and "/." not in p[len(path):])
    return [storage.to_uri(fs, p) for p in names]


def score_sources(scores_uri: str) -> list[str]:
    """The existing output file, then the shards of an unfinished run, oldest first."""
    return _parquet_files(scores_uri) + _parquet_files(shards_dir_for(scores_uri))


def scored_video_ids(scores_uri: str, critic_id: str, need_reasons: bool = False) -> set[str]:
    """Video ids already scored by ``critic_id`` (with rationales when ``need_reasons``)."""
    done: set[str] = set()
    cols = [*PAIR, "reason_semantic"] if need_reasons else list(PAIR)
    for uri in score_sources(scores_uri):
        fs, path = storage.fs_and_path(uri)
        t = pq.read_table(path, filesystem=fs, columns=cols)
        ids, critics = t.column("video_id").to_pylist(), t.column("critic_id").to_pylist()
        reasons = t.column("reason_semantic").to_pylist() if need_reasons else [""] * len(ids)
        done.update(v for v, c, r in zip(ids, critics, reasons) if c == critic_id and r is not None)
    return done


def compact_scores(scores_uri: str) -> int:
    """Merge the output file and its shards into ``scores_uri``: one row per pair, the newest wins.

    Streams one file at a time (two passes: pick the winners, then copy them), writes atomically,
    then removes the shards. Returns the number of rows written.
    """
    sources = score_sources(scores_uri)
    if not sources:
        storage.write_table(scores_uri, SCORES_SCHEMA.empty_table())
        return 0
    winner: dict[tuple[str, str], tuple[int, int]] = {}
    for fi, uri in enumerate(sources):
        fs, path = storage.fs_and_path(uri)
        t = pq.read_table(path, filesystem=fs, columns=list(PAIR))
        for ri, pair in enumerate(zip(t.column("video_id").to_pylist(), t.column("critic_id").to_pylist())):
            winner[pair] = (fi, ri)
    keep_by_file: dict[int, list[int]] = {}
    for fi, ri in winner.values():
        keep_by_file.setdefault(fi, []).append(ri)
    del winner

    fs, path = storage.fs_and_path(scores_uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[-1]}"
    written = 0
    with fs.open(tmp, "wb") as sink, pq.ParquetWriter(sink, SCORES_SCHEMA, compression="zstd") as writer:
        for fi, uri in enumerate(sources):
            rows = sorted(keep_by_file.get(fi, []))
            if not rows:
                continue
            sfs, spath = storage.fs_and_path(uri)
            t = pq.read_table(spath, filesystem=sfs).select(SCORES_SCHEMA.names).cast(SCORES_SCHEMA)
            part = t.take(pa.array(rows, pa.int64()))
            writer.write_table(part)
            written += part.num_rows
    fs.mv(tmp, path)
    shards = shards_dir_for(scores_uri)
    sfs, spath = storage.fs_and_path(shards)
    if sfs.exists(spath):
        sfs.rm(spath, recursive=True)
    return written


def _frames_dataset(frames_uris: Iterable[str]):
    from lift_core.video.frames import read_frames_dataset

    datasets = [read_frames_dataset(u) for u in frames_uris]
    if not datasets:
        raise FileNotFoundError("no frames inputs")
    ds = datasets[0]
    return ds.union(*datasets[1:]) if len(datasets) > 1 else ds


def score_to_shards(
    cfg: PipelineConfig,
    frames_uris: list[str],
    todo: pa.Table,
    adapter_uri: str,
    scores_uri: str,
    *,
    model: str | None = None,
    rationale: bool | None = None,
    progress: ProgressFn | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Score the videos of ``todo`` (``video_id``, ``uri``, ``caption``, ``source``) found in the frames.

    Frames rows not in ``todo`` (already scored, or not selected) pass the actors unscored.
    Returns the number of score rows written to shards and quarantine rows for unusable frames;
    raises when the actors returned fewer rows than ``todo`` has (a rerun resumes).
    """
    import ray

    from lift_core.critic.scoring import CriticScorer
    from lift_core.distributed.actor_pool import ActorPool, map_on_actor_pool, shard_name, shard_run_id
    from lift_core.distributed.ray_runtime import ensure_ray

    progress = resolve(progress)
    if todo.num_rows == 0:
        return 0, []
    ensure_ray(cfg.ray)
    s = cfg.score
    # Blocks of at most one shard of rows: an actor task's results reach the driver (and a shard on
    # disk) when the task ends, so this bounds both the memory in flight and the work lost to a kill.
    ds = _frames_dataset(frames_uris).select_columns(["video_id", "frames"])
    ds = ds.repartition(target_num_rows_per_block=max(s.batch_size, s.rows_per_shard))
    scored = map_on_actor_pool(
        ds,
        CriticScorer,
        {
            "adapter": adapter_uri,
            "model": model,
            "critic": cfg.critic,
            "score": s,
            "frame_size": (cfg.decode.height, cfg.decode.width),
            "rationale": rationale,
            "metadata": ray.put(todo.select(["video_id", "uri", "caption", "source"])),
        },
        pool=ActorPool(s.num_actors, s.num_cpus_per_actor, s.num_gpus_per_actor),
        batch_size=s.batch_size,
        expected_rows=todo.num_rows,  # every todo row has frames: fewer back means rows were lost
        what="scoring",
        result_rows=s.rows_per_shard,
        ray_config=cfg.ray,
    )
    shards = shards_dir_for(scores_uri)
    storage.makedirs(shards)
    # Names sort in time order across runs, so compaction can let the newest row of a pair win.
    run = shard_run_id()
    written, failed = 0, []
    for seq, batch in enumerate(scored):
        bad = pc.is_valid(batch.column("error"))
        failed.extend(
            quarantine_row(r["uri"], "score", r["error"], r["video_id"])
            for r in batch.filter(bad).select(["uri", "video_id", "error"]).to_pylist()
        )
        good = batch.filter(pc.invert(bad)).drop_columns(["error"])
        if good.num_rows:
            storage.write_table(storage.join(shards, shard_name(run, seq)), good.cast(SCORES_SCHEMA))
            written += good.num_rows
        progress(min((written + len(failed)) / todo.num_rows, 1.0), f"scored {written}/{todo.num_rows} videos")
    return written, failed


def frames_video_ids(frames_uris: Iterable[str]) -> set[str]:
    """Every video id present in the frames shards (reads one small column)."""
    from lift_core.video.frames import shard_files

    ids: set[str] = set()
    for frames_uri in frames_uris:
        for uri in shard_files(frames_uri):
            fs, path = storage.fs_and_path(uri)
            ids.update(pq.read_table(path, filesystem=fs, columns=["video_id"]).column("video_id").to_pylist())
    return ids


def read_manifests(manifest_uris: Iterable[str], sources: list[str] | None = None) -> pa.Table:
    """``video_id``, ``uri``, ``caption``, ``source`` of the manifests; first row per video id wins."""
    cols = ["video_id", "uri", "caption", "source"]
    tables = [storage.read_table(u, columns=cols) for u in manifest_uris]
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in cols})
    t = pa.concat_tables([x.cast(pa.schema([(c, pa.string()) for c in cols])) for x in tables])
    seen: set[str] = set()
    keep = []
    for i, (vid, src) in enumerate(zip(t.column("video_id").to_pylist(), t.column("source").to_pylist())):
        if vid in seen or (sources is not None and src not in sources):
            continue
        seen.add(vid)
        keep.append(i)
    return t.take(pa.array(keep, pa.int64()))


def plan(manifest: pa.Table, frames_ids: set[str], done: set[str]) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Split the manifest rows into those to score now and those without frames (to quarantine)."""
    todo, missing = [], []
    for i, vid in enumerate(manifest.column("video_id").to_pylist()):
        if vid not in frames_ids:
            missing.append(i)
        elif vid not in done:
            todo.append(i)
    return manifest.take(pa.array(todo, pa.int64())), manifest.take(pa.array(missing, pa.int64())).to_pylist()
