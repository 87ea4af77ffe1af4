"""Ingest stage: catalog datasets -> ``manifest.parquet`` (videos), ``prompts.parquet``, ``quarantine.parquet``.

- ``video_id`` is the content id of the video bytes (``storage.content_id``); a video whose file is
  missing or unreadable, or is refused (not a regular file, over ``data.max_video_bytes``, past
  ``data.read_timeout_s``), becomes a quarantine row. Every ``data.*`` bound applies
  (``InputLimits.from_config``).
- The manifest holds absolute URIs and records its base (``lift_core.data.manifest``): it means the
  same files whatever directory a later command runs in.
- Rejected entries of a reader (file, entry index, reason) become quarantine rows too.
- Bounded, decodable inputs: every record of every reader is checked again before its video is
  opened (a caption that is not text, is undecodable or longer than ``data.max_caption_chars``; a
  path or reason that is undecodable): such a record becomes a quarantine row, never an Arrow or
  codec error that aborts the stage. Quarantine text is escaped so that it always fits Parquet.
- Containment: the readers reject relative video paths that leave their root, symlinks under it that
  resolve outside it included; absolute paths and URLs are allowed and counted (``absolute_paths``).
- Videos are merged over all datasets and deduplicated by ``video_id`` (the first dataset listed
  wins); prompts by their text (VBench tags are merged). Every duplicate is counted; a duplicate file
  is quarantined only when its caption or labels are dropped with it.
- Splits are deterministic: a salted hash of the ``video_id`` (prompts: of the prompt text).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lift_core import storage
from lift_core.config import DIMENSIONS, PipelineConfig, SplitConfig
from lift_core.data.catalog import DatasetEntry, load_catalog
from lift_core.data.inputs import InputLimits
from lift_core.data.manifest import write_manifest
from lift_core.data.sources import DEFAULT_MAX_CAPTION_CHARS, ReadResult, read_source, record_problem, safe_text
from lift_core.progress import ProgressFn, resolve
from lift_core.schemas import MANIFEST_SCHEMA, PROMPTS_SCHEMA, QUARANTINE_SCHEMA, quarantine_row, rows_to_table

STAGE = "ingest"


def assign_split(key: str, split: SplitConfig) -> str:
    """Deterministic split from a salted hash of ``key`` (a video_id or a prompt's text)."""
    u = int(hashlib.sha256(f"{split.salt}:{key}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    if u < split.test:
        return "test"
    if u < split.test + split.val:
        return "val"
    return "train"


def prompt_id(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]


def hash_videos(
    records: list[dict[str, Any]], workers: int = 8, limits: InputLimits | None = None
) -> tuple[list[dict], list[dict]]:
    """Attach content-derived ``video_id``s; missing, unreadable or refused files (not a regular file,
    over ``data.max_video_bytes``, past ``data.read_timeout_s``) become quarantine rows."""
    limits = limits or InputLimits()

    def one(rec: dict[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
        try:
            return rec, limits.video_content_id(rec["uri"]), None
        except FileNotFoundError:
            return rec, None, f"missing video file: {rec['uri']}"
        except IsADirectoryError:
            return rec, None, f"not a file: {rec['uri']}"
        except storage.InputRefusedError as err:
            return rec, None, f"video file refused: {err}"
        except (OSError, ValueError) as err:  # ValueError: a path no file system takes (a plugin's record)
            return rec, None, f"unreadable video file: {type(err).__name__}: {err}"

    ok, bad = [], []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rec, vid, err in pool.map(one, records):
            if err:
                bad.append(_quarantine_row(rec["uri"], err))
            else:
                ok.append({**rec, "video_id": vid})
    return ok, bad


def _quarantine_row(uri: Any, error: str, video_id: str | None = None) -> dict[str, Any]:
    """A quarantine row whose text always encodes (a lone surrogate in a path or reason is escaped)."""
    return quarantine_row(safe_text(uri) if isinstance(uri, str) else None, STAGE, safe_text(error), video_id)


def _checked(res: ReadResult, max_caption_chars: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reader's records that can enter a table, and a quarantine row for each one that cannot."""
    ok, bad = [], []
    for rec in res.records:
        problem = record_problem(rec, res.kind, max_caption_chars)
        if problem is None:
            ok.append(rec)
            continue
        uri = rec.get("uri") if res.kind == "videos" and isinstance(rec.get("uri"), str) else res.uri
        bad.append(_quarantine_row(uri, f"rejected record of {res.uri}: {problem}" if res.uri else problem))
    return ok, bad


def _table(rows: list[dict[str, Any]], schema: pa.Schema, quarantine: list[dict[str, Any]]) -> pa.Table:
    """``rows`` as a table; a row that Arrow refuses (a value of the wrong type) is quarantined, not fatal."""
    try:
        return rows_to_table(rows, schema)
    except (pa.ArrowException, UnicodeError, TypeError, ValueError):
        pass
    kept = []
    for row in rows:
        try:
            rows_to_table([row], schema)
        except (pa.ArrowException, UnicodeError, TypeError, ValueError) as err:
            quarantine.append(_quarantine_row(row.get("uri"), f"unusable record: {type(err).__name__}: {err}",
                                              row.get("video_id")))
            continue
        kept.append(row)
    return rows_to_table(kept, schema)


@dataclass
class IngestTables:
    manifest: pa.Table
    prompts: pa.Table
    quarantine: pa.Table
    counts: dict[str, int] = field(default_factory=dict)


# What a manifest row holds of its entry besides the video: a duplicate file that differs in any of
# these loses it (the manifest keeps one row per video), so only then is it quarantined as dropped.
_ROW_CONTENT = ("caption", "source", *(f"{k}_{d}" for d in DIMENSIONS for k in ("label", "reason")))


def build_tables(
    results: list[ReadResult], split: SplitConfig, max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS,
    *, limits: InputLimits | None = None, every_entry_used: bool = False,
) -> IngestTables:
    """Merge reader results into the manifest, prompt and quarantine tables (sorted by id).

    A file whose content is already in the manifest (a copy) is counted in ``duplicate_videos``; it is
    quarantined only when something of it is dropped: its caption, labels or reasons differ from the
    kept row's. ``every_entry_used``: the caller uses every accepted entry (``lift score`` scores each
    (video, caption) pair), so a copy drops nothing and is never quarantined.
    """
    limits = limits or InputLimits(max_caption_chars=max_caption_chars)
    max_caption_chars = limits.max_caption_chars
    videos: dict[str, dict[str, Any]] = {}
    prompts: dict[str, dict[str, Any]] = {}
    quarantine: list[dict[str, Any]] = []
    counts = {"rejected_entries": 0, "missing_videos": 0, "duplicate_videos": 0, "duplicate_prompts": 0, "ratings": 0,
              "absolute_paths": 0}
    for res in results:
        counts["rejected_entries"] += len(res.rejects)
        counts["ratings"] += res.ratings
        counts["absolute_paths"] += res.absolute_paths
        quarantine.extend(
            _quarantine_row(r.file, f"rejected entry {r.index}: {r.reason}" if r.index is not None else r.reason)
            for r in res.rejects
        )
        records, bad = _checked(res, max_caption_chars)
        counts["rejected_entries"] += len(bad)
        quarantine.extend(bad)
        if res.kind == "prompts":
            for rec in records:
                pid = prompt_id(rec["caption"])
                if pid in prompts:
                    counts["duplicate_prompts"] += 1
                    merged = prompts[pid]["dimensions"] + [d for d in rec["dimensions"] if d not in prompts[pid]["dimensions"]]
                    prompts[pid]["dimensions"] = merged
                    continue
                prompts[pid] = {**rec, "prompt_id": pid, "split": assign_split(rec["caption"].strip(), split)}
            continue
        hashed, bad = hash_videos(records, limits=limits)
        counts["missing_videos"] += len(bad)
        quarantine.extend(bad)
        for rec in hashed:
            first = videos.get(rec["video_id"])
            if first is not None:
                counts["duplicate_videos"] += 1
                lost = [k for k in _ROW_CONTENT if rec.get(k) != first.get(k)]
                if first["uri"] != rec["uri"] and lost and not every_entry_used:
                    quarantine.append(_quarantine_row(
                        rec["uri"], f"duplicate content of {first['uri']} (kept that one); dropped with it, as "
                                    f"they differ from that row's: {', '.join(lost)}", rec["video_id"]))
                continue
            videos[rec["video_id"]] = {**rec, "split": assign_split(rec["video_id"], split)}
    manifest = _table(sorted(videos.values(), key=lambda r: r["video_id"]), MANIFEST_SCHEMA, quarantine)
    prompt_table = _table(sorted(prompts.values(), key=lambda r: r["prompt_id"]), PROMPTS_SCHEMA, quarantine)
    quarantine_table = rows_to_table(quarantine, QUARANTINE_SCHEMA)
    counts.update(summary_counts(manifest, prompt_table, quarantine_table))
    return IngestTables(manifest, prompt_table, quarantine_table, counts)


def summary_counts(manifest: pa.Table, prompts: pa.Table, quarantine: pa.Table) -> dict[str, int]:
    counts = {"videos": manifest.num_rows, "prompts": prompts.num_rows, "quarantined": quarantine.num_rows}
    for name, table in (("videos", manifest), ("prompts", prompts)):
        for col, prefix in (("source", name), ("split", f"{name}_split")):
            values = table.column(col).to_pylist()
            counts.update({f"{prefix}_{v}": values.count(v) for v in sorted(set(values))})
    return counts


def resolve_datasets(cfg: PipelineConfig, synth_outputs: dict[str, str] | None) -> list[DatasetEntry]:
    """The config's datasets from the catalog, with ``{synth}`` resolved from the synth outputs."""
    catalog = load_catalog(cfg.data.catalog)
    if not cfg.data.datasets:
        raise ValueError("data.datasets is empty: name at least one catalog dataset")
    missing = [n for n in cfg.data.datasets if n not in catalog]
    if missing:
        raise ValueError(f"data.datasets: unknown dataset(s) {missing}; the catalog has {sorted(catalog)}")
    variables = {"synth": synth_outputs["videos_root"]} if synth_outputs and "videos_root" in synth_outputs else {}
    return [catalog[name].resolved(variables) for name in cfg.data.datasets]


def write_tables(out: str, tables: IngestTables) -> dict[str, str]:
    outputs = {
        "manifest": storage.join(out, "manifest.parquet"),
        "prompts": storage.join(out, "prompts.parquet"),
        "quarantine": storage.join(out, "quarantine.parquet"),
    }
    write_manifest(outputs["manifest"], tables.manifest)
    storage.write_table(outputs["prompts"], tables.prompts)
    storage.write_table(outputs["quarantine"], tables.quarantine)
    return outputs


def stage_out(cfg: PipelineConfig, synth_outputs: dict[str, str] | None = None) -> tuple[str, str]:
    """(key, output dir) of the ingest stage: the datasets' entries and content, ``data`` and the code version."""
    entries = resolve_datasets(cfg, synth_outputs)
    upstream = [storage.fingerprint_uri(e.uri) for e in entries]
    key = storage.stage_key(STAGE, upstream, cfg.data.fingerprint(), [e.__dict__ for e in entries])
    return key, storage.stage_dir(cfg.run_root, STAGE, key)


def run_ingest(
    cfg: PipelineConfig, synth_outputs: dict[str, str] | None = None, progress: ProgressFn | None = None
) -> storage.StageResult:
    """Read every dataset of ``cfg.data.datasets`` into one manifest, one prompt table and a quarantine."""
    progress = resolve(progress)
    entries = resolve_datasets(cfg, synth_outputs)
    key, out = stage_out(cfg, synth_outputs)
    if done := storage.load_success(out):
        return done
    results = []
    limits = InputLimits.from_config(cfg.data)
    for i, e in enumerate(entries):
        progress(i / len(entries), f"reading {e.name} ({e.format}) from {e.uri}")
        results.append(read_source(e.format, e.uri, e.videos_root, e.source, limits=limits))
    tables = build_tables(results, cfg.data.split, limits=limits)
    outputs = write_tables(out, tables)
    c = tables.counts
    progress(1.0, f"{c['videos']} videos, {c['prompts']} prompts, {c['quarantined']} quarantined")
    metrics = {"datasets": [e.name for e in entries], "rejected": [r["error"] for r in tables.quarantine.to_pylist()[:20]]}
    return storage.mark_success(storage.StageResult(STAGE, key, out, outputs, c, metrics))


def ingest_source(
    fmt: str,
    uri: str,
    out_uri: str,
    videos_root: str | None = None,
    split: SplitConfig | None = None,
    max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS,
    *,
    limits: InputLimits | None = None,
    every_entry_used: bool = False,
) -> dict[str, int]:
    """One source -> one table at ``out_uri`` (videos: manifest; prompts: prompt table).

    The quarantine goes beside it as ``<out>.quarantine.parquet``. Returns the counts. ``limits``
    (the config's ``data.*`` bounds; its ``max_caption_chars`` wins) and ``every_entry_used`` are
    ``build_tables``'s.
    """
    limits = limits or InputLimits(max_caption_chars=max_caption_chars)
    result = read_source(fmt, uri, videos_root, limits=limits)
    tables = build_tables([result], split or SplitConfig(), limits=limits, every_entry_used=every_entry_used)
    if result.kind == "prompts":
        storage.write_table(out_uri, tables.prompts)
    else:
        write_manifest(out_uri, tables.manifest)
    storage.write_table(quarantine_uri_for(out_uri), tables.quarantine)
    return tables.counts


def quarantine_uri_for(out_uri: str) -> str:
    base = out_uri[: -len(".parquet")] if out_uri.endswith(".parquet") else out_uri
    return f"{base}.quarantine.parquet"


__all__ = ["assign_split", "build_tables", "ingest_source", "prompt_id", "resolve_datasets", "run_ingest"]
