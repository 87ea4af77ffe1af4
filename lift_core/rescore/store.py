"""The scores store: an append-only Parquet dataset of critic scores, partitioned by scoring date.

Layout under the store root (any fsspec URI)::

    scores/scored_date=YYYY-MM-DD/part-<time>-<run>-<seq>.parquet   score rows (STORE_SCHEMA)
    quarantine/scored_date=YYYY-MM-DD/part-....parquet               inputs that could not be scored
    _index/part-....parquet                                          (uri, version) -> video_id cache
    _locks/<critic_id>.lock                                          one writer per critic (lock.py)
    _runs/<run_id>.json                                              each run's summary
    trend.png                                                        mean reward per day (latest run)

Atomicity: every part is written under a dot-prefixed temporary name and then moved into place
(``storage.write_table``); readers only read ``part-*.parquet``, so a crashed writer leaves nothing a
reader sees. A score row is keyed by (``video_id``, ``caption_id``, ``critic_id``), the scores
contract: every dimension's prompt holds the caption. Writers hold the per-critic lock and plan after
acquiring it, and readers deduplicate on read keeping the earliest score per key. The second rule
makes the store correct even if two writers ever overlap (a broken stale lock, a manual copy). Parts
written before ``caption_id`` was in the contract read with it derived from ``caption``.
"""

from __future__ import annotations

import time
import uuid
from datetime import date, datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lift_core import storage
from lift_core.schemas import QUARANTINE_SCHEMA, SCORE_KEY, SCORES_SCHEMA, caption_id, with_caption_id

PART_PREFIX = "part-"
PARTITION = "scored_date"
KEY = SCORE_KEY
# What a run plans by: each generated video is scored once per critic, with its own caption.
VIDEO_CRITIC = ("video_id", "critic_id")
# Quarantine rows of this stage settle their (video_id, critic_id); others (no caption, unreadable
# file) are retried by the next run.
SETTLED_QUARANTINE_STAGE = "rescore-decode"

# Score rows plus where they came from: the run that wrote them and the file's modification time.
STORE_SCHEMA = pa.schema(
    [*SCORES_SCHEMA, ("run_id", pa.string()), ("generated_at", pa.timestamp("us", tz="UTC"))]
)
STORE_QUARANTINE_SCHEMA = pa.schema(
    [*QUARANTINE_SCHEMA, ("critic_id", pa.string()), ("run_id", pa.string()),
     ("quarantined_at", pa.timestamp("us", tz="UTC"))]
)
INDEX_SCHEMA = pa.schema([("uri", pa.string()), ("version", pa.string()), ("video_id", pa.string())])


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id() -> str:
    return f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def _is_part(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.startswith(PART_PREFIX) and name.endswith(".parquet")


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
    # Restore file order, so the result reads like the files (earliest part first).
    out = out.take(pc.sort_indices(out, sort_keys=[("__pos", "ascending")]))
    return out.drop_columns(["__pos", "__rank"])


class ScoresStore:
    """Reader and appender of one store root. Cheap to construct; holds no open handles."""

    def __init__(self, uri: str):
        self.uri = str(uri).rstrip("/")
        self.fs, self.path = storage.fs_and_path(self.uri)
        self.scores_uri = storage.join(self.uri, "scores")
        self.quarantine_uri = storage.join(self.uri, "quarantine")
        self.index_uri = storage.join(self.uri, "_index")
        self.locks_uri = storage.join(self.uri, "_locks")
        self.runs_uri = storage.join(self.uri, "_runs")
        self.trend_uri = storage.join(self.uri, "trend.png")

    # ------------------------------------------------------------------ listing
    def _parts(self, table_uri: str) -> list[str]:
        """Committed parts of one table, sorted by name (names start with their write time)."""
        _, path = storage.fs_and_path(table_uri)
        # Listings are cached per filesystem instance; another process may have committed since.
        self.fs.invalidate_cache(path)
        if not self.fs.exists(path):
            return []
        files = [p for p in self.fs.find(path) if _is_part(p) and "/." not in p[len(path):]]
        return sorted(files, key=lambda p: (p.rsplit("/", 1)[-1], p))

    def score_parts(self) -> list[str]:
        return self._parts(self.scores_uri)

    def _read(self, table_uri: str, schema: pa.Schema, columns: Sequence[str] | None) -> pa.Table:
        files = self._parts(table_uri)
        cols = list(columns) if columns is not None else schema.names
        wanted = pa.schema([schema.field(c) for c in cols])
        if not files:
            return wanted.empty_table()
        tables = []
        for f in files:
            pf = pq.ParquetFile(f, filesystem=self.fs)
            names = set(pf.schema_arrow.names)
            if "caption_id" in cols and "caption_id" not in names:  # a part from before caption_id
                read = [c for c in dict.fromkeys([*cols, "caption"]) if c in names]
                t = with_caption_id(pf.read(columns=read))
            else:
                t = pf.read(columns=[c for c in cols if c != PARTITION])
            if PARTITION in cols:  # the partition value lives in the path
                day = next((s.split("=", 1)[1] for s in f.split("/") if s.startswith(f"{PARTITION}=")), None)
                t = t.append_column(PARTITION, pa.array([day] * t.num_rows, pa.string()))
            tables.append(t.select(cols).cast(wanted))
        return pa.concat_tables(tables)

    # ------------------------------------------------------------------ scores
    def read_scores(
        self, columns: Sequence[str] | None = None, critic_id: str | None = None, dedup: bool = True
    ) -> pa.Table:
        """All score rows (``STORE_SCHEMA``), one per (video_id, caption_id, critic_id) unless ``dedup=False``."""
        cols = list(columns) if columns is not None else STORE_SCHEMA.names
        need = list(dict.fromkeys([*cols, *KEY, "scored_at"])) if dedup else cols
        schema = STORE_SCHEMA.append(pa.field(PARTITION, pa.string()))
        t = self._read(self.scores_uri, schema, need)
        if critic_id is not None:
            t = t.filter(pc.equal(t.column("critic_id"), critic_id))
        if dedup:
            t = dedup_earliest(t)
        return t.select(cols)

    def read_quarantine(self, columns: Sequence[str] | None = None) -> pa.Table:
        return self._read(self.quarantine_uri, STORE_QUARANTINE_SCHEMA, columns)

    def scored_pairs(self) -> set[tuple[str, str]]:
        """(video_id, critic_id) pairs that are settled: scored, or quarantined for their content."""
        t = self._read(self.scores_uri, STORE_SCHEMA, list(VIDEO_CRITIC))
        pairs = set(zip(t.column("video_id").to_pylist(), t.column("critic_id").to_pylist()))
        q = self.read_quarantine([*VIDEO_CRITIC, "stage"])
        for vid, cid, stage in zip(*(q.column(c).to_pylist() for c in (*VIDEO_CRITIC, "stage"))):
            if stage == SETTLED_QUARANTINE_STAGE and vid is not None and cid is not None:
                pairs.add((vid, cid))  # its content does not decode: retrying cannot help
        return pairs

    def _append(self, table_uri: str, table: pa.Table, run_id: str, seq: int, day: date | None = None) -> str:
        day = day or utcnow().date()
        name = f"{PART_PREFIX}{utcnow():%Y%m%dT%H%M%S%f}-{run_id}-{seq:05d}.parquet"
        uri = storage.join(table_uri, f"{PARTITION}={day.isoformat()}", name)
        storage.write_table(uri, table)  # temp name, then moved into place
        return uri

    def append_scores(self, rows: Sequence[Mapping[str, Any]], run_id: str, seq: int) -> str | None:
        """Commit one part of score rows; returns its URI (None when there are no rows)."""
        if not rows:
            return None
        defaults = {"run_id": run_id}
        table = pa.Table.from_pylist(
            [{f.name: r.get(f.name, defaults.get(f.name)) for f in STORE_SCHEMA}
             | {"caption_id": r.get("caption_id") or caption_id(r.get("caption"))} for r in rows],
            schema=STORE_SCHEMA,
        )
        scored_at = rows[0].get("scored_at")
        day = scored_at.astimezone(timezone.utc).date() if isinstance(scored_at, datetime) else None
        return self._append(self.scores_uri, table, run_id, seq, day)

    def append_quarantine(self, rows: Sequence[Mapping[str, Any]], run_id: str, seq: int) -> str | None:
        if not rows:
            return None
        now = utcnow()
        defaults = {"run_id": run_id, "quarantined_at": now}
        table = pa.Table.from_pylist(
            [{f.name: r.get(f.name, defaults.get(f.name)) for f in STORE_QUARANTINE_SCHEMA} for r in rows],
            schema=STORE_QUARANTINE_SCHEMA,
        )
        return self._append(self.quarantine_uri, table, run_id, seq)

    # ------------------------------------------------------------------ content-id index
    def read_index(self) -> dict[tuple[str, str], str]:
        """(uri, version) -> video_id for files hashed before: a file whose listing is unchanged is not reread."""
        t = self._read(self.index_uri, INDEX_SCHEMA, None)
        return {(u, v): vid for u, v, vid in zip(*(t.column(c).to_pylist() for c in INDEX_SCHEMA.names))}

    def append_index(self, rows: Iterable[Mapping[str, str]], run_id: str) -> str | None:
        rows = list(rows)
        if not rows:
            return None
        table = pa.Table.from_pylist([{c: r[c] for c in INDEX_SCHEMA.names} for r in rows], schema=INDEX_SCHEMA)
        uri = storage.join(self.index_uri, f"{PART_PREFIX}{utcnow():%Y%m%dT%H%M%S%f}-{run_id}.parquet")
        storage.write_table(uri, table)
        return uri

    # ------------------------------------------------------------------ upkeep
    def sweep_temp_files(self, older_than_s: float) -> list[str]:
        """Delete temporary files that crashed writers left behind (readers never see them anyway)."""
        removed = []
        cutoff = time.time() - older_than_s
        for table_uri in (self.scores_uri, self.quarantine_uri, self.index_uri):
            _, path = storage.fs_and_path(table_uri)
            self.fs.invalidate_cache(path)
            if not self.fs.exists(path):
                continue
            for p, info in self.fs.find(path, detail=True).items():
                if p.rsplit("/", 1)[-1].startswith(".tmp-"):
                    when = modified_time(info)
                    if when is not None and when.timestamp() < cutoff:
                        self.fs.rm(p)
                        removed.append(storage.to_uri(self.fs, p))
        return removed

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
