"""Scoring on Ray Data: frames Parquet -> critic actor pool -> score shards -> one ``scores.parquet``.

- The critic is loaded once per actor (``lift_core.distributed.actor_pool``), with ``score.num_gpus_per_actor``.
- Frames stream from Parquet through the actors; only the small score rows reach the driver, which
  writes them as atomic shards of ``score.rows_per_shard`` rows. Memory stays flat as videos grow.
- Scores are keyed by what they depend on: (``video_id``, ``caption_id``, ``critic_id``). A video is
  decoded once and scored once per distinct caption the manifests give it.
- Resume: shards of a killed run stay; a restart skips every key already in the output or its
  shards. Compaction streams shards into one file, one row per key (the newest).
"""

from __future__ import annotations

import uuid
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.data.manifest import read_manifest
from lift_core.progress import ProgressFn, count, resolve
from lift_core.schemas import SCORE_KEY, SCORES_SCHEMA, caption_id, quarantine_row, with_caption_id

SCORED = ("video_id", "caption_id")  # what is scored; with the critic, the key of a score row


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


def _read_scores(uri: str, columns: list[str] | None = None) -> pa.Table:
    """One scores file (``columns`` of it, default all), with ``caption_id`` derived from ``caption``
    where it is missing (files written before it was part of the contract) or null."""
    fs, path = storage.fs_and_path(uri)
    pf = pq.ParquetFile(path, filesystem=fs)
    names = pf.schema_arrow.names
    want = list(columns) if columns is not None else [*names, *(["caption_id"] if "caption_id" not in names else [])]
    if "caption_id" not in want:
        return pf.read(columns=want)
    read = [c for c in dict.fromkeys([*want, "caption"]) if c in names]
    return with_caption_id(pf.read(columns=read)).select(want)


def scored_keys(scores_uri: str, critic_id: str, need_reasons: bool = False) -> set[tuple[str, str]]:
    """(``video_id``, ``caption_id``) pairs already scored by ``critic_id`` (with rationales when ``need_reasons``)."""
    done: set[tuple[str, str]] = set()
    cols = [*SCORE_KEY, "reason_semantic"] if need_reasons else list(SCORE_KEY)
    for uri in score_sources(scores_uri):
        t = _read_scores(uri, cols)
        ids, caps, critics = (t.column(c).to_pylist() for c in SCORE_KEY)
        reasons = t.column("reason_semantic").to_pylist() if need_reasons else [""] * len(ids)
        done.update((v, k) for v, k, c, r in zip(ids, caps, critics, reasons) if c == critic_id and r is not None)
    return done


def compact_scores(scores_uri: str) -> int:
    """Merge the output file and its shards into ``scores_uri``: one row per key, the newest wins.

    Streams one file at a time (two passes: pick the winners, then copy them), writes atomically,
    then removes the shards. Returns the number of rows written.
    """
    sources = score_sources(scores_uri)
    if not sources:
        storage.write_table(scores_uri, SCORES_SCHEMA.empty_table())
        return 0
    winner: dict[tuple[str, ...], tuple[int, int]] = {}
    for fi, uri in enumerate(sources):
        t = _read_scores(uri, list(SCORE_KEY))
        for ri, key in enumerate(zip(*(t.column(c).to_pylist() for c in SCORE_KEY))):
            winner[key] = (fi, ri)
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
            t = _read_scores(uri).select(SCORES_SCHEMA.names).cast(SCORES_SCHEMA)
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
    """Score the (video, caption) rows of ``todo`` (``video_id``, ``uri``, ``caption``, ``caption_id``,
    ``source``) whose video is in the frames: each video's frames are read once, for all its captions.

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
            "metadata": ray.put(todo.select(["video_id", "uri", "caption", "caption_id", "source"])),
        },
        pool=ActorPool(s.num_actors, s.num_cpus_per_actor, s.num_gpus_per_actor),
        batch_size=s.batch_size,
        expected_rows=todo.num_rows,  # one result per todo row, each has frames: fewer back means rows were lost
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
        count(progress, written + len(failed), todo.num_rows, "pairs", f"scored (video, caption), {len(failed)} failed")
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
    """``video_id``, ``uri``, ``caption``, ``caption_id``, ``source`` of the manifests: one row per
    (``video_id``, ``caption_id``), the first wins. A video listed with two captions is two rows."""
    cols = ["video_id", "uri", "caption", "source"]
    out = [*cols[:3], "caption_id", "source"]
    tables = [read_manifest(u, columns=cols) for u in manifest_uris]  # relative URIs resolved
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in out})
    t = pa.concat_tables([x.cast(pa.schema([(c, pa.string()) for c in cols])) for x in tables])
    t = t.append_column("caption_id", pa.array([caption_id(c) for c in t.column("caption").to_pylist()], pa.string()))
    seen: set[tuple[str, str]] = set()
    keep = []
    rows = zip(*(t.column(c).to_pylist() for c in ("video_id", "caption_id", "source")))
    for i, (vid, cid, src) in enumerate(rows):
        if (vid, cid) in seen or (sources is not None and src not in sources):
            continue
        seen.add((vid, cid))
        keep.append(i)
    return t.take(pa.array(keep, pa.int64())).select(out)


def plan(
    manifest: pa.Table, frames_ids: set[str], done: set[tuple[str, str]]
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Split the manifest's (video, caption) rows into those to score now and those whose video has
    no frames (to quarantine); ``done`` holds the (``video_id``, ``caption_id``) already scored."""
    todo, missing = [], []
    for i, key in enumerate(zip(*(manifest.column(c).to_pylist() for c in SCORED))):
        if key[0] not in frames_ids:
            missing.append(i)
        elif key not in done:
            todo.append(i)
    return manifest.take(pa.array(todo, pa.int64())), manifest.take(pa.array(missing, pa.int64())).to_pylist()
