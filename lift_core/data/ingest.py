"""Ingest stage: catalog datasets -> ``manifest.parquet`` (videos), ``prompts.parquet``, ``quarantine.parquet``."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from data_catalog.catalog import DatasetEntry, load_catalog
from data_catalog.readers import ReadResult, read_source
from lift_core import storage
from lift_core.config import PipelineConfig, SplitConfig
from lift_core.progress import ProgressFn, resolve
from lift_core.schemas import MANIFEST_SCHEMA, PROMPTS_SCHEMA, QUARANTINE_SCHEMA, quarantine_row, rows_to_table


def assign_split(key: str, split: SplitConfig) -> str:
    """Deterministic split from a hash of ``key`` (a video_id or prompt text)."""
    u = int(hashlib.sha256(f"{split.salt}:{key}".encode()).hexdigest()[:8], 16) / 0x100000000
    if u < split.test:
        return "test"
    if u < split.test + split.val:
        return "val"
    return "train"


def hash_videos(records: list[dict[str, Any]], stage: str = "ingest") -> tuple[list[dict], list[dict]]:
    """Attach content-derived ``video_id``s; unreadable files become quarantine rows."""

    def one(rec):
        try:
            return rec, storage.content_id(rec["uri"]), None
        except (FileNotFoundError, IsADirectoryError) as err:
            return rec, None, f"missing file: {err}"
        except OSError as err:
            return rec, None, f"unreadable file: {err}"

    ok, bad = [], []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for rec, vid, err in pool.map(one, records):
            if err:
                bad.append(quarantine_row(rec["uri"], stage, err))
            else:
                ok.append({**rec, "video_id": vid})
    return ok, bad


def build_tables(results: list[ReadResult], split: SplitConfig) -> tuple[pa.Table, pa.Table, pa.Table]:
    videos: dict[str, dict[str, Any]] = {}
    prompts: dict[str, dict[str, Any]] = {}
    quarantine: list[dict[str, Any]] = []
    for res in results:
        quarantine.extend(quarantine_row(r.file, "ingest", f"rejected entry {r.index}: {r.reason}") for r in res.rejects)
        if res.kind == "prompts":
            for rec in res.records:
                pid = hashlib.sha256(rec["caption"].encode()).hexdigest()[:16]
                prompts.setdefault(pid, {**rec, "prompt_id": pid, "split": assign_split(rec["caption"], split)})
            continue
        hashed, bad = hash_videos(res.records)
        quarantine.extend(bad)
        for rec in hashed:
            if rec["video_id"] in videos:
                first = videos[rec["video_id"]]
                if first["uri"] != rec["uri"]:
                    quarantine.append(
                        quarantine_row(rec["uri"], "ingest", f"duplicate content of {first['uri']}", rec["video_id"])
                    )
                continue
            videos[rec["video_id"]] = {**rec, "split": assign_split(rec["video_id"], split)}
    by_id = sorted(videos.values(), key=lambda r: r["video_id"])
    return (
        rows_to_table(by_id, MANIFEST_SCHEMA),
        rows_to_table(sorted(prompts.values(), key=lambda r: r["prompt_id"]), PROMPTS_SCHEMA),
        rows_to_table(quarantine, QUARANTINE_SCHEMA),
    )


def resolve_datasets(cfg: PipelineConfig, synth_outputs: dict[str, str] | None) -> list[DatasetEntry]:
    catalog = load_catalog(cfg.data.catalog)
    variables = {"synth": synth_outputs["videos_root"]} if synth_outputs else {}
    missing = [n for n in cfg.data.datasets if n not in catalog]
    if missing:
        raise ValueError(f"data.datasets: unknown dataset(s) {missing}; catalog has {sorted(catalog)}")
    return [catalog[name].resolved(variables) for name in cfg.data.datasets]


def run_ingest(
    cfg: PipelineConfig, synth_outputs: dict[str, str] | None = None, progress: ProgressFn | None = None
) -> storage.StageResult:
    progress = resolve(progress)
    entries = resolve_datasets(cfg, synth_outputs)
    upstream = [storage.fingerprint_uri(e.uri) for e in entries]
    key = storage.stage_key("ingest", upstream, cfg.data.fingerprint(), [e.__dict__ for e in entries])
    out = storage.stage_dir(cfg.run_root, "ingest", key)
    if done := storage.load_success(out):
        return done
    results = []
    for i, e in enumerate(entries):
        progress(i / max(len(entries), 1), f"reading {e.name} ({e.format})")
        results.append(read_source(e.format, e.uri, e.videos_root, e.source))
    manifest, prompts, quarantine = build_tables(results, cfg.data.split)
    outputs = {
        "manifest": storage.join(out, "manifest.parquet"),
        "prompts": storage.join(out, "prompts.parquet"),
        "quarantine": storage.join(out, "quarantine.parquet"),
    }
    storage.write_table(outputs["manifest"], manifest)
    storage.write_table(outputs["prompts"], prompts)
    storage.write_table(outputs["quarantine"], quarantine)
    progress(1.0, f"{manifest.num_rows} videos, {prompts.num_rows} prompts, {quarantine.num_rows} quarantined")
    return storage.mark_success(storage.StageResult("ingest", key, out, outputs, ingest_counts(manifest, prompts, quarantine)))


def ingest_counts(manifest: pa.Table, prompts: pa.Table, quarantine: pa.Table) -> dict[str, int]:
    sources = manifest.column("source").to_pylist()
    counts = {"videos": manifest.num_rows, "prompts": prompts.num_rows, "quarantined": quarantine.num_rows}
    counts.update({f"videos_{s}": sources.count(s) for s in sorted(set(sources))})
    return counts


def ingest_source(
    fmt: str, uri: str, out_uri: str, videos_root: str | None = None, split: SplitConfig | None = None
) -> dict[str, int]:
    """One source -> one table at ``out_uri`` (videos: manifest; prompts: prompt table), quarantine beside it."""
    result = read_source(fmt, uri, videos_root)
    manifest, prompts, quarantine = build_tables([result], split or SplitConfig())
    storage.write_table(out_uri, prompts if result.kind == "prompts" else manifest)
    base = out_uri[: -len(".parquet")] if out_uri.endswith(".parquet") else out_uri
    storage.write_table(f"{base}.quarantine.parquet", quarantine)
    return ingest_counts(manifest, prompts, quarantine)
