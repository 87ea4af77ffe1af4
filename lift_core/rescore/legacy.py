"""Migration of a scores store written before the Delta tables: an append-only Parquet folder.

The old layout (``lift_core/rescore/store.py`` up to commit 3dbe560), deduplicated when read::

    scores/scored_date=YYYY-MM-DD/part-<time>-<run>-<seq>.parquet
    quarantine/scored_date=YYYY-MM-DD/part-....parquet
    _index/part-<time>-<run>.parquet
    _locks/<critic_id>.lock

``migrate`` reads every committed part as the old reader did (``.tmp-*`` files of killed writers
ignored, ``caption_id`` derived for parts from before it, one row per key: the earliest score),
MERGEs the rows into the Delta tables, checks that every key it read is in them, and only then
moves the old files under ``_legacy/`` (nothing is deleted: remove ``_legacy/`` when satisfied). The
MERGE makes it idempotent, so a migration that died half way is finished by the next one, and rows
written to the Delta tables meanwhile are kept (an existing key keeps its Delta row).
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lift_core import storage
from lift_core.rescore.delta import Table, is_local
from lift_core.rescore.store import PARTITION, ScoresStore, dedup_earliest, unique_rows
from lift_core.schemas import with_caption_id

# table name in ScoresStore.tables() -> the old folder under the store root
LEGACY_DIRS = {"scores": "scores", "quarantine": "quarantine", "index": "_index"}
LEFTOVERS = ("_locks",)  # the old per-critic lock files: moved along, never read
PART_PREFIX = "part-"


def has_legacy(store: ScoresStore) -> bool:
    """Whether the root still holds folders of the old layout (one listing of the root)."""
    store.fs.invalidate_cache(store.path)
    try:
        entries = store.fs.ls(store.path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    names = {str(p).rstrip("/").rsplit("/", 1)[-1] for p in entries}
    return bool(names & {*LEGACY_DIRS.values(), *LEFTOVERS})


def _parts(store: ScoresStore, folder: str) -> list[str]:
    """Committed parts of one old table, in write order (their names start with their write time)."""
    _, path = storage.fs_and_path(storage.join(store.uri, folder))
    store.fs.invalidate_cache(path)
    if not store.fs.exists(path):
        return []
    files = [p for p in store.fs.find(path)
             if p.rsplit("/", 1)[-1].startswith(PART_PREFIX) and p.endswith(".parquet") and "/." not in p[len(path):]]
    return sorted(files, key=lambda p: (p.rsplit("/", 1)[-1], p))


def _read_part(store: ScoresStore, path: str, schema: pa.Schema) -> pa.Table:
    """One old part as ``schema``: ``caption_id`` derived where missing, absent columns null."""
    pf = pq.ParquetFile(path, filesystem=store.fs)
    names = set(pf.schema_arrow.names)
    t = pf.read(columns=[c for c in schema.names if c in names])
    if "caption_id" in schema.names:
        t = with_caption_id(t)
    if PARTITION in schema.names and PARTITION not in t.column_names:  # the partition value lives in the path
        day = next((s.split("=", 1)[1] for s in path.split("/") if s.startswith(f"{PARTITION}=")), None)
        t = t.append_column(PARTITION, pa.array([day] * t.num_rows, pa.string()))
    for f in schema:
        if f.name not in t.column_names:
            t = t.append_column(f.name, pa.nulls(t.num_rows, f.type))
    return t.select(schema.names).cast(schema)


def read_legacy(store: ScoresStore, name: str) -> tuple[pa.Table, int, int]:
    """(rows as the old reader returned them, parts read, rows in the parts) of one old table."""
    table = store.tables()[name]
    parts = _parts(store, LEGACY_DIRS[name])
    if not parts:
        return table.schema.empty_table(), 0, 0
    raw = pa.concat_tables([_read_part(store, p, table.schema) for p in parts])
    if name == "scores":
        rows = dedup_earliest(raw)
    else:
        rows = pa.Table.from_pylist(unique_rows(raw.to_pylist(), table.key), schema=table.schema)
    return rows, len(parts), raw.num_rows


def _keys(table: pa.Table, key: tuple[str, ...]) -> set[tuple]:
    return set(zip(*(table.column(k).to_pylist() for k in key)))


def _move_tree(store: ScoresStore, src_uri: str, dst_uri: str) -> int:
    """Move every file under ``src_uri`` to the same relative path under ``dst_uri``; files moved."""
    fs = store.fs
    _, src = storage.fs_and_path(src_uri)
    _, dst = storage.fs_and_path(dst_uri)
    fs.invalidate_cache(src)
    if not fs.exists(src):
        return 0
    files = fs.find(src)
    if is_local(store.uri) and not fs.exists(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(src, dst)  # one atomic rename
        return len(files)
    for f in files:
        target = dst + f[len(src):]
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        try:
            fs.mv(f, target)
        except FileNotFoundError:  # a concurrent migration moved it first
            continue
    if is_local(store.uri) and fs.exists(src) and not fs.find(src):
        fs.rm(src, recursive=True)
    return len(files)


def migrate(store: ScoresStore) -> dict[str, Any]:
    """Convert the old Parquet store at ``store``'s root into its Delta tables; what it did.

    Raises (leaving the old files in place) if a key read from them is not in the tables after.
    """
    report: dict[str, Any] = {"store": store.uri, "migrated": False, "moved_to": store.legacy_uri, "tables": {}}
    if not has_legacy(store):
        return report
    for name in LEGACY_DIRS:
        rows, n_parts, n_raw = read_legacy(store, name)
        if n_parts == 0:
            continue
        table: Table = store.tables()[name]
        m = table.merge(rows, {"operation": "migrate-parquet", "legacy_parts": n_parts, "legacy_rows": n_raw})
        missing = _keys(rows, table.key) - _keys(table.read(list(table.key)), table.key)
        if missing:
            raise RuntimeError(f"{store.uri}: migrating {LEGACY_DIRS[name]}/ left {len(missing)} key(s) out of "
                               f"{table.uri}, e.g. {sorted(missing, key=str)[:3]}; the Parquet parts are untouched")
        report["tables"][name] = {"parts": n_parts, "rows_read": n_raw, "rows": rows.num_rows,
                                  "inserted": int(m.get("num_target_rows_inserted") or 0), "version": m["version"]}
    moved = {}
    for folder in [*LEGACY_DIRS.values(), *LEFTOVERS]:
        n = _move_tree(store, storage.join(store.uri, folder), storage.join(store.legacy_uri, folder))
        if n:
            moved[folder] = n
    report.update(migrated=True, files_moved=moved)
    return report
