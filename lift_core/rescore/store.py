"""The scores store: Delta Lake tables of critic scores, keyed and versioned (``deltalake``).

Layout under the store root (a local path or an object store URI: ``s3://``, ``gs://``, ``az://``)::

    delta/scores/       score rows (STORE_SCHEMA + scored_date), partitioned by scored_date (UTC day)
    delta/quarantine/   inputs that could not be scored
    delta/index/        (uri, version) -> video_id cache: a file whose listing is unchanged is not reread
    _runs/<run_id>.json each run's summary
    trend.png           mean reward per day (latest run)
    _legacy/            the Parquet parts of a store written before the Delta tables (kept after migration)

The tables are plain Delta tables: Spark, DuckDB (``delta_scan``), Polars (``read_delta``) and Ray
(``read_delta``) read them as they are. A score row is keyed by (``video_id``, ``caption_id``,
``critic_id``), the scores contract (every dimension's prompt holds the caption). Every write is a
MERGE that inserts only the rows whose key is not in the table yet, in one atomic commit: rescoring is
idempotent (a rerun adds no row, the first score of a key stays) and two writers never duplicate a
key (``delta.Table.merge``: delta-rs's commit conflicts, retried). The table's versions are the
store's history (``history``); ``compact`` (OPTIMIZE) and ``vacuum`` (VACUUM) keep it small.

A store written by the old code (an append-only Parquet folder, deduplicated on read) is migrated the
first time this class touches it, or by ``lift rescore-store migrate`` (``lift_core.rescore.legacy``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from lift_core import storage
from lift_core.rescore.delta import StoreBusy, Table
from lift_core.schemas import QUARANTINE_SCHEMA, SCORE_KEY, SCORES_SCHEMA, caption_id

PARTITION = "scored_date"
KEY = SCORE_KEY
# What a run plans by: each generated video is scored once per critic, with its own caption.
VIDEO_CRITIC = ("video_id", "critic_id")
# Quarantine rows of this stage settle their (video_id, critic_id); others (no caption, unreadable
# file) are retried by the next run.
SETTLED_QUARANTINE_STAGE = "rescore-decode"
QUARANTINE_KEY = ("uri", "video_id", "critic_id", "stage", "error")
INDEX_KEY = ("uri", "version")

# Score rows plus where they came from: the run that wrote them and the file's modification time.
STORE_SCHEMA = pa.schema(
    [*SCORES_SCHEMA, ("run_id", pa.string()), ("generated_at", pa.timestamp("us", tz="UTC"))]
)
SCORES_TABLE_SCHEMA = STORE_SCHEMA.append(pa.field(PARTITION, pa.string()))
STORE_QUARANTINE_SCHEMA = pa.schema(
    [*QUARANTINE_SCHEMA, ("critic_id", pa.string()), ("run_id", pa.string()),
     ("quarantined_at", pa.timestamp("us", tz="UTC"))]
)
INDEX_SCHEMA = pa.schema([("uri", pa.string()), ("version", pa.string()), ("video_id", pa.string())])

DEFAULT_RETENTION_HOURS = 168.0  # VACUUM keeps the files of the last week's versions (time travel)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id() -> str:
    return f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def dedup_earliest(table: pa.Table, key: Sequence[str] = KEY, order_by: str = "scored_at") -> pa.Table:
    """Keep one row per ``key``: the earliest by ``order_by``, ties broken by position (file order)."""
    if table.num_rows == 0:
        return table
    pos = pa.array(range(table.num_rows), pa.int64())
    sort_keys = [(order_by, "ascending", "at_end")] if order_by in table.column_names else []
    ordered = table.append_column("__pos", pos)
    ordered = ordered.take(pc.sort_indices(ordered, sort_keys=[*sort_keys, ("__pos", "ascending", "at_end")]))
    ranked = ordered.append_column("__rank", pa.array(range(ordered.num_rows), pa.int64()))
    first = ranked.group_by(list(key), use_threads=False).aggregate([("__rank", "min")])
    keep = pc.is_in(ranked.column("__rank"), value_set=first.column("__rank_min"))
    out = ranked.filter(keep)
    out = out.take(pc.sort_indices(out, sort_keys=[("__pos", "ascending")]))
    return out.drop_columns(["__pos", "__rank"])


def unique_rows(rows: Iterable[Mapping[str, Any]], key: Sequence[str]) -> list[Mapping[str, Any]]:
    """The first row of each ``key`` (None equals None), in order."""
    seen, out = set(), []
    for r in rows:
        k = tuple(r.get(c) for c in key)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def _day(value: Any) -> str:
    when = value if isinstance(value, datetime) else utcnow()
    return (when.astimezone(timezone.utc) if when.tzinfo else when).date().isoformat()


class ScoresStore:
    """Reader and writer of one store root. Cheap to construct; holds no open handles.

    The first call that touches the tables migrates an old Parquet store found at the root
    (``migrate=False``: never; ``lift_core.rescore.legacy.migrate`` does it on demand).
    """

    def __init__(self, uri: str, retries: int = 30, migrate: bool = True):
        self.uri = str(uri).rstrip("/")
        self.fs, self.path = storage.fs_and_path(self.uri)
        self.scores_uri = storage.join(self.uri, "delta", "scores")
        self.quarantine_uri = storage.join(self.uri, "delta", "quarantine")
        self.index_uri = storage.join(self.uri, "delta", "index")
        self.runs_uri = storage.join(self.uri, "_runs")
        self.trend_uri = storage.join(self.uri, "trend.png")
        self.legacy_uri = storage.join(self.uri, "_legacy")
        self.scores = Table(self.scores_uri, SCORES_TABLE_SCHEMA, KEY, partition_by=[PARTITION], retries=retries)
        self.quarantine = Table(self.quarantine_uri, STORE_QUARANTINE_SCHEMA, QUARANTINE_KEY, null_safe_key=True,
                                retries=retries)
        self.index = Table(self.index_uri, INDEX_SCHEMA, INDEX_KEY, retries=retries)
        self._migrate = migrate
        self.migration: dict[str, Any] | None = None  # what the automatic migration did, if it ran

    def tables(self) -> dict[str, Table]:
        return {"scores": self.scores, "quarantine": self.quarantine, "index": self.index}

    def _ready(self) -> None:
        """Once per instance: migrate an old Parquet store at the root (one listing of the root)."""
        if not self._migrate:
            return
        self._migrate = False
        from lift_core.rescore import legacy

        if legacy.has_legacy(self):
            self.migration = legacy.migrate(self)

    # ------------------------------------------------------------------ scores
    def read_scores(
        self, columns: Sequence[str] | None = None, critic_id: str | None = None, dedup: bool = True,
        version: int | None = None,
    ) -> pa.Table:
        """Score rows (``STORE_SCHEMA``; ``scored_date`` on request), oldest score first.

        Rows are unique on (video_id, caption_id, critic_id) by construction; ``dedup`` also
        deduplicates rows another engine may have appended bypassing the MERGE (earliest kept).
        ``version``: the table as it was at that version (time travel, until VACUUM removes its files).
        """
        self._ready()
        cols = list(columns) if columns is not None else STORE_SCHEMA.names
        need = list(dict.fromkeys([*cols, *KEY, "scored_at"]))
        predicate = f"critic_id = '{critic_id.replace(chr(39), chr(39) * 2)}'" if critic_id is not None else None
        t = self.scores.read(need, predicate=predicate, version=version)
        t = t.take(pc.sort_indices(t, sort_keys=[("scored_at", "ascending"), *((k, "ascending") for k in KEY)]))
        if dedup:
            t = dedup_earliest(t)
        return t.select(cols)

    def read_quarantine(self, columns: Sequence[str] | None = None) -> pa.Table:
        self._ready()
        t = self.quarantine.read(columns)
        if "quarantined_at" in t.column_names:
            t = t.take(pc.sort_indices(t, sort_keys=[("quarantined_at", "ascending")]))
        return t

    def scored_pairs(self) -> set[tuple[str, str]]:
        """(video_id, critic_id) pairs that are settled: scored, or quarantined for their content."""
        self._ready()
        t = self.scores.read(list(VIDEO_CRITIC))
        pairs = set(zip(t.column("video_id").to_pylist(), t.column("critic_id").to_pylist()))
        q = self.quarantine.read(list(VIDEO_CRITIC), predicate=f"stage = '{SETTLED_QUARANTINE_STAGE}'")
        for vid, cid in zip(q.column("video_id").to_pylist(), q.column("critic_id").to_pylist()):
            if vid is not None and cid is not None:
                pairs.add((vid, cid))  # its content does not decode: retrying cannot help
        return pairs

    def append_scores(self, rows: Sequence[Mapping[str, Any]], run_id: str, seq: int) -> dict[str, Any] | None:
        """MERGE one batch of score rows (one commit): rows whose key is already stored are skipped.

        Returns ``{"version", "inserted", "skipped"}`` (None when there are no rows).
        """
        if not rows:
            return None
        self._ready()
        full = [{f.name: r.get(f.name) for f in STORE_SCHEMA} | {"run_id": r.get("run_id") or run_id,
                "caption_id": r.get("caption_id") or caption_id(r.get("caption")), PARTITION: _day(r.get("scored_at"))}
                for r in rows]
        table = dedup_earliest(pa.Table.from_pylist(full, schema=SCORES_TABLE_SCHEMA))
        m = self.scores.merge(table, {"operation": "rescore", "run_id": run_id, "batch": seq})
        inserted = int(m.get("num_target_rows_inserted") or 0)
        return {"version": m["version"], "inserted": inserted, "skipped": len(rows) - inserted}

    def append_quarantine(self, rows: Sequence[Mapping[str, Any]], run_id: str, seq: int) -> int | None:
        """MERGE quarantine rows (a row already recorded, by any run, is not recorded twice); the new version."""
        if not rows:
            return None
        self._ready()
        now = utcnow()
        full = [{f.name: r.get(f.name) for f in STORE_QUARANTINE_SCHEMA}
                | {"run_id": r.get("run_id") or run_id, "quarantined_at": r.get("quarantined_at") or now} for r in rows]
        table = pa.Table.from_pylist(unique_rows(full, QUARANTINE_KEY), schema=STORE_QUARANTINE_SCHEMA)
        return self.quarantine.merge(table, {"operation": "quarantine", "run_id": run_id, "batch": seq})["version"]

    # ------------------------------------------------------------------ content-id index
    def read_index(self) -> dict[tuple[str, str], str]:
        """(uri, version) -> video_id for files hashed before: a file whose listing is unchanged is not reread."""
        self._ready()
        t = self.index.read()
        return {(u, v): vid for u, v, vid in zip(*(t.column(c).to_pylist() for c in INDEX_SCHEMA.names))}

    def append_index(self, rows: Iterable[Mapping[str, str]], run_id: str) -> int | None:
        rows = unique_rows([{c: r[c] for c in INDEX_SCHEMA.names} for r in rows], INDEX_KEY)
        if not rows:
            return None
        self._ready()
        table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
        return self.index.merge(table, {"operation": "index", "run_id": run_id})["version"]

    # ------------------------------------------------------------------ versions and upkeep
    def version(self) -> int | None:
        """The scores table's current version (None before the first write)."""
        self._ready()
        return self.scores.version()

    def history(self, limit: int | None = None, table: str = "scores") -> list[dict[str, Any]]:
        """The versions of one table (``scores``, ``quarantine`` or ``index``), newest first.

        Each: ``version``, ``timestamp`` (ms since the epoch), ``operation`` (CREATE TABLE, MERGE,
        OPTIMIZE, VACUUM START/END), ``lift`` (what wrote it: operation, run_id, batch), and
        ``rows_inserted`` / ``files_added`` / ``files_removed`` where the operation reports them.
        """
        self._ready()
        return self.tables()[table].history(limit)

    def compact(self) -> dict[str, dict[str, Any]]:
        """OPTIMIZE every table: small files of many commits become few big ones; rows unchanged."""
        self._ready()
        return {name: t.compact({"operation": "compact"}) for name, t in self.tables().items()}

    def vacuum(self, retention_hours: float = DEFAULT_RETENTION_HOURS, dry_run: bool = False) -> dict[str, list[str]]:
        """VACUUM every table: delete files that no version of the last ``retention_hours`` reads.

        Versions older than that can no longer be read back (``read_scores(version=...)``); their
        entries stay in ``history``. A writer still running that long must not be running now.
        """
        self._ready()
        return {name: t.vacuum(retention_hours, dry_run) for name, t in self.tables().items()}

    def maintain(self, min_files: int, retention_hours: float = DEFAULT_RETENTION_HOURS) -> dict[str, Any] | None:
        """Compact and vacuum when the scores table has ``min_files`` data files or more (0: never)."""
        if min_files <= 0:
            return None
        files = self.scores.file_count()
        if files < min_files:
            return None
        compacted = self.compact()
        vacuumed = self.vacuum(retention_hours)
        return {"files_before": files, "files_after": self.scores.file_count(),
                "compacted": {k: {m: v.get(m) for m in ("numFilesAdded", "numFilesRemoved", "version")}
                              for k, v in compacted.items()},
                "vacuumed": {k: len(v) for k, v in vacuumed.items()}}

    def write_run_summary(self, run_id: str, summary: Mapping[str, Any]) -> str:
        uri = storage.join(self.runs_uri, f"{run_id}.json")
        storage.write_json(uri, dict(summary))
        return uri


def modified_time(info: Mapping[str, Any]) -> datetime | None:
    """A listing entry's modification time (local ``mtime``, S3 ``LastModified``, memory ``created``)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


__all__ = [
    "INDEX_SCHEMA", "KEY", "PARTITION", "SCORES_TABLE_SCHEMA", "SETTLED_QUARANTINE_STAGE", "STORE_QUARANTINE_SCHEMA",
    "STORE_SCHEMA", "ScoresStore", "StoreBusy", "dedup_earliest", "modified_time", "new_run_id", "utcnow",
]
