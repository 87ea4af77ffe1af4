"""One Delta Lake table of the scores store (``deltalake``, delta-rs): keyed MERGE, compaction, history.

Every write is a Delta commit: the data files first, then the next ``_delta_log/<version>.json``,
created only if it does not exist yet. Concurrency control is delta-rs's own:

- locally, the commit file is created with an atomic no-replace rename;
- on S3 (and MinIO, R2, moto), delta-rs 1.x creates it with a conditional PUT
  (``If-None-Match: *``). We set neither ``AWS_S3_ALLOW_UNSAFE_RENAME`` (it gives up that
  guarantee) nor a locking provider (DynamoDB: delta-rs 1.x has none any more); a store whose S3
  does not honour conditional writes must not be written by two runs at once.

Two writers that race for one version: the loser re-checks what the winner committed. Appends
commute and are retried inside delta-rs. A MERGE that read files the winner changed, or did not see
rows the winner added, fails with ``CommitFailedError``; ``merge`` then reloads the table and runs the
MERGE again, so its "insert when not matched" never inserts a key the winner inserted.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any, Mapping, Sequence

import fsspec
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import CommitProperties

log = logging.getLogger("lift.rescore")

# The commitInfo key under which our own commits say what wrote them (``history`` reads it back).
META_KEY = "lift"


class StoreBusy(RuntimeError):
    """Other writers kept committing to the table: our MERGE lost the race ``retries`` times in a row."""


def table_uri(uri: str) -> str:
    """The URI delta-rs opens: object store URIs as they are, local paths absolute."""
    uri = str(uri).rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        return uri
    return os.path.abspath(uri[len("file://"):] if uri.startswith("file://") else uri)


def is_local(uri: str) -> bool:
    return "://" not in str(uri) or str(uri).startswith("file://")


def storage_options(uri: str) -> dict[str, str] | None:
    """delta-rs options for ``uri``, from the same settings fsspec (s3fs) uses.

    delta-rs reads the ``AWS_*`` environment itself (credentials, ``AWS_ENDPOINT_URL``,
    ``AWS_REGION``); an endpoint, credentials or region set in fsspec's configuration
    (``fsspec.config.conf["s3"]``, as the tests and ``~/.config/fsspec`` do) are passed on, and an
    ``http://`` endpoint (MinIO, moto) is allowed. Other schemes: delta-rs's own environment.
    """
    scheme = str(uri).split("://", 1)[0] if "://" in str(uri) else "file"
    if scheme not in ("s3", "s3a"):
        return None
    conf = dict(fsspec.config.conf.get("s3", {}))
    client = dict(conf.get("client_kwargs") or {})
    opts: dict[str, str] = {}
    endpoint = (conf.get("endpoint_url") or client.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    if endpoint:
        opts["AWS_ENDPOINT_URL"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    for ours, theirs in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"), ("token", "AWS_SESSION_TOKEN")):
        if conf.get(ours):
            opts[theirs] = str(conf[ours])
    region = client.get("region_name") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["AWS_REGION"] = str(region)
    return opts


def _sql_name(name: str) -> str:
    return name


class Table:
    """A Delta table at ``uri`` with ``schema``, unique on ``key`` (written by ``merge``) or append-only."""

    def __init__(self, uri: str, schema: pa.Schema, key: Sequence[str] = (), partition_by: Sequence[str] = (),
                 null_safe_key: bool = False, retries: int = 30):
        self.uri = table_uri(uri)
        self.schema = schema
        self.key = tuple(key)
        self.partition_by = list(partition_by)
        self.null_safe_key = null_safe_key
        self.retries = max(1, int(retries))
        self.options = storage_options(self.uri)

    # ------------------------------------------------------------------ opening
    def open(self, version: int | None = None) -> DeltaTable | None:
        """The table at its latest (or given) version; None when it was never written."""
        try:
            return DeltaTable(self.uri, version=version, storage_options=self.options)
        except TableNotFoundError:
            return None

    def exists(self) -> bool:
        return DeltaTable.is_deltatable(self.uri, storage_options=self.options)

    def _create(self) -> DeltaTable:
        if is_local(self.uri):
            os.makedirs(self.uri, exist_ok=True)
        # "ignore": a table another writer created first is used as it is.
        return DeltaTable.create(self.uri, schema=self.schema, mode="ignore", partition_by=self.partition_by or None,
                                 storage_options=self.options,
                                 commit_properties=CommitProperties(custom_metadata={META_KEY: {"operation": "create"}}))

    def version(self) -> int | None:
        dt = self.open()
        return None if dt is None else dt.version()

    # ------------------------------------------------------------------ reading
    def read(self, columns: Sequence[str] | None = None, predicate: str | None = None,
             version: int | None = None) -> pa.Table:
        """Rows of the table (all columns of ``schema`` unless ``columns``), cast to ``schema``'s types.

        Read with delta-rs's own engine (``scan``), not a pyarrow dataset: the pyarrow filesystem
        bridge it would use aborts the interpreter at exit after concurrent writes.
        """
        cols = list(columns) if columns is not None else self.schema.names
        wanted = pa.schema([self.schema.field(c) for c in cols])
        dt = self.open(version)
        if dt is None:
            return wanted.empty_table()
        got = pa.table(dt.scan(columns=cols, predicate=predicate))
        return got.select(cols).cast(wanted)

    # ------------------------------------------------------------------ writing
    def _commit(self, meta: Mapping[str, Any] | None) -> CommitProperties:
        return CommitProperties(custom_metadata={META_KEY: dict(meta or {})})

    def _on(self) -> str:
        eq = "IS NOT DISTINCT FROM" if self.null_safe_key else "="
        return " AND ".join(f"(t.{_sql_name(k)} {eq} s.{_sql_name(k)})" for k in self.key)

    def merge(self, rows: pa.Table, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Insert the rows whose key is not in the table yet (one commit): a rerun inserts nothing.

        Returns delta-rs's MERGE metrics plus ``version`` (None when there was nothing to write).
        ``rows`` must be unique on the key. Lost races are retried on the reloaded table.
        """
        if not self.key:
            raise ValueError(f"{self.uri}: a table without a key is append-only")
        rows = rows.select(self.schema.names).cast(self.schema)
        if rows.num_rows == 0:
            return {"num_target_rows_inserted": 0, "version": None}
        for attempt in range(self.retries):
            dt = self.open() or self._create()
            try:
                metrics = (dt.merge(rows, self._on(), source_alias="s", target_alias="t",
                                    commit_properties=self._commit(meta))
                           .when_not_matched_insert_all().execute())
            except CommitFailedError as err:
                # Another writer committed what our MERGE had to see: merge again on the new version.
                log.info("%s: MERGE lost a commit race (%s); retrying (%d)", self.uri, str(err).splitlines()[0],
                         attempt + 1)
                time.sleep(min(2.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.5))
                continue
            metrics = dict(metrics)
            metrics["version"] = dt.version()
            return metrics
        raise StoreBusy(f"{self.uri}: other writers kept committing; gave up after {self.retries} MERGE attempts")

    def append(self, rows: pa.Table, meta: Mapping[str, Any] | None = None) -> int | None:
        """Append ``rows`` (one commit, atomic); returns the new version (None: nothing to write)."""
        rows = rows.select(self.schema.names).cast(self.schema)
        if rows.num_rows == 0:
            return None
        dt = self.open() or self._create()
        write_deltalake(dt, rows, mode="append", commit_properties=self._commit(meta))
        return dt.version()

    # ------------------------------------------------------------------ upkeep
    def compact(self, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """OPTIMIZE: rewrite small files into big ones (readers see the same rows, one new version)."""
        for attempt in range(self.retries):
            dt = self.open()
            if dt is None:
                return {}
            try:
                metrics = dt.optimize.compact(commit_properties=self._commit(meta))
            except CommitFailedError:
                time.sleep(min(2.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.5))
                continue
            return {**metrics, "version": dt.version()}
        raise StoreBusy(f"{self.uri}: other writers kept committing; gave up compacting after {self.retries} attempts")

    def vacuum(self, retention_hours: float, dry_run: bool = False) -> list[str]:
        """VACUUM: delete the files no version younger than ``retention_hours`` needs (and stray files)."""
        dt = self.open()
        if dt is None:
            return []
        hours = max(0, int(retention_hours))
        return dt.vacuum(retention_hours=hours, dry_run=dry_run, enforce_retention_duration=False,
                         commit_properties=self._commit({"operation": "vacuum"}))

    def file_count(self) -> int:
        dt = self.open()
        return 0 if dt is None else len(dt.file_uris())

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The table's versions, newest first: version, timestamp, operation, metrics, our metadata.

        (delta-rs 1.6's ``history`` holds the GIL while it reads the log: other Python threads wait.)
        """
        dt = self.open()
        if dt is None:
            return []
        out = []
        for c in dt.history(limit):
            metrics = c.get("operationMetrics") or {}
            out.append({"version": c.get("version"), "timestamp": c.get("timestamp"),
                        "operation": c.get("operation"), "lift": c.get(META_KEY) or {},
                        "rows_inserted": metrics.get("num_target_rows_inserted", metrics.get("num_added_rows")),
                        "files_added": metrics.get("num_target_files_added", metrics.get("num_added_files",
                                                                                          metrics.get("numFilesAdded"))),
                        "files_removed": metrics.get("num_target_files_removed", metrics.get("num_removed_files",
                                                                                              metrics.get("numFilesRemoved"))),
                        "metrics": metrics})
        return out
