"""Manifests against their files: where a manifest's URIs point, and whether they still hold the
video that the row names.

- **A relative ``uri`` is relative to the manifest's base, never to the working directory.** The
  base is the ``lift.uri_base`` entry of the manifest's Parquet metadata when present, else the
  folder that holds the manifest. Manifests that the pipeline writes (``write_manifest``) hold
  absolute URIs and record their base, so they mean the same files from any directory.
- **``video_id`` is checked against the file** (DESIGN.md: it is the content id of the video's
  bytes). ``content_problem`` gives the quarantine reason, with both ids, of a row whose file holds
  other content: another video's id written in the row, a relative URI that resolves to other files,
  a file replaced since ingest. The decode stage and the alignment's latent cache check every video
  before they decode it (``checked_video_source``); ``lift score`` checks every row of a manifest it
  is given (``check_rows``) before any work.
"""

from __future__ import annotations

import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from lift_core import storage
from lift_core.data.inputs import InputLimits
from lift_core.schemas import quarantine_row

URI_BASE_KEY = b"lift.uri_base"
CHECK_STAGE = "check-manifest"  # the quarantine stage of rows that ``check_rows`` refuses
RELATIVE_RULE = "relative URIs resolve against the manifest's lift.uri_base metadata, else its own folder"


def is_absolute(uri: str) -> bool:
    """An absolute local path or a URL (``s3://...``): used as it is."""
    return uri.startswith("/") or "://" in uri


def folder_of(manifest_uri: str) -> str:
    """The folder that holds ``manifest_uri`` (absolute when local)."""
    uri = storage.abspath_if_local(manifest_uri)
    return uri.rsplit("/", 1)[0] if "/" in uri.rstrip("/") else uri


def base_of(manifest_uri: str, metadata: dict[bytes, bytes] | None) -> str:
    """Where the relative URIs of the manifest at ``manifest_uri`` resolve (see the module docstring)."""
    recorded = (metadata or {}).get(URI_BASE_KEY)
    return recorded.decode("utf-8", "backslashreplace") if recorded else folder_of(manifest_uri)


def resolve(base: str, uri: str | None) -> str | None:
    """``uri`` resolved against ``base`` (absolute paths and URLs stay as they are)."""
    if not uri or is_absolute(uri):
        return uri
    if "://" in base:
        scheme, path = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(path, uri))}"
    return posixpath.normpath(posixpath.join(base, uri))


def read_manifest(manifest_uri: str, columns: list[str] | None = None) -> pa.Table:
    """The manifest at ``manifest_uri`` with every relative ``uri`` resolved (``resolve``).

    A local manifest that is neither a regular file nor a folder of shards (a FIFO, a device) is a
    ``ValueError`` naming it: Parquet's reader would wait on it, or read it, forever."""
    local = storage.local_path(manifest_uri)
    if local is not None and os.path.exists(local):
        kind = storage.non_regular_kind(os.stat(local).st_mode)
        if kind not in (None, "a directory"):
            raise ValueError(f"manifest {manifest_uri}: not a regular file ({kind}); only regular files are read")
    table = storage.read_table(manifest_uri, columns=columns)
    if "uri" not in table.column_names:
        return table
    uris = table.column("uri").to_pylist()
    if all(u is None or is_absolute(u) for u in uris):
        return table
    base = base_of(manifest_uri, table.schema.metadata)
    resolved = pa.array([resolve(base, u) for u in uris], pa.string())
    return table.set_column(table.column_names.index("uri"), table.schema.field("uri"), resolved)


def write_manifest(uri: str, table: pa.Table) -> None:
    """Write a manifest whose local URIs are absolute, recording its base (``lift.uri_base``)."""
    if "uri" in table.column_names:
        uris = table.column("uri").to_pylist()
        absolute = pa.array([storage.abspath_if_local(u) if u else u for u in uris], pa.string())
        table = table.set_column(table.column_names.index("uri"), table.schema.field("uri"), absolute)
    metadata = {**(table.schema.metadata or {}), URI_BASE_KEY: folder_of(uri).encode()}
    storage.write_table(uri, table.replace_schema_metadata(metadata))


def check_rows(table: pa.Table, limits: InputLimits, stage: str = CHECK_STAGE,
               workers: int = 8) -> tuple[pa.Table, list[dict[str, Any]]]:
    """The rows of a manifest (URIs resolved: ``read_manifest``) whose file holds the video that their
    ``video_id`` names, and a quarantine row for every other one: no uri or id, a file that cannot
    be read or is refused (``limits``), or other content (``content_problem``: both ids).

    Every row is checked, a repeated ``video_id`` too: a consumer that uses the rows themselves (the
    score stage scores each (video, caption) row) would otherwise score one video's frames under
    another row's file. Each distinct file is read once, in threads (remote reads are I/O bound).
    """
    uris, ids = table.column("uri").to_pylist(), table.column("video_id").to_pylist()

    def content(uri: str) -> tuple[str | None, str | None]:
        try:
            return limits.video_content_id(uri), None
        except FileNotFoundError:
            return None, f"missing video file: {uri}"
        except IsADirectoryError:
            return None, f"not a file: {uri}"
        except (OSError, ValueError) as err:
            return None, f"unreadable video file: {err}"

    distinct = sorted({u for u in uris if u})
    with ThreadPoolExecutor(max(1, workers)) as pool:
        found = dict(zip(distinct, pool.map(content, distinct)))
    keep, bad = [], []
    for i, (uri, vid) in enumerate(zip(uris, ids)):
        if not uri or not vid:
            problem = "manifest row without uri or video_id"
        else:
            actual, problem = found[uri]
            problem = problem or content_problem(vid, actual, uri)
        if problem:
            bad.append(quarantine_row(uri, stage, problem, vid))
        else:
            keep.append(i)
    return table.take(pa.array(keep, pa.int64())), bad


def checked_video_source(video_id: str, uri: str, limits: InputLimits) -> str | bytes:
    """What a decoder reads for a row whose file must hold the video ``video_id``: the local path, or
    the bytes of a remote file (read once: hashed, then decoded). ``VideoDecodeError`` with the reason
    when the file is missing, refused (not a regular file, over ``limits``) or holds another video
    (``content_problem``: both ids)."""
    from lift_core.video.io import VideoDecodeError

    local = storage.local_path(uri) is not None
    try:
        if local:
            actual = limits.video_content_id(uri)
        else:
            data = storage.read_input_bytes(uri, limits.max_video_bytes, limits.read_timeout_s,
                                            limit_name="data.max_video_bytes")
            actual = storage.sha256_hex(data)[:16]
    except FileNotFoundError:
        raise VideoDecodeError(f"file not found: {uri}") from None
    except IsADirectoryError:
        raise VideoDecodeError(f"is a directory, not a video: {uri}") from None
    except storage.InputRefusedError as err:
        raise VideoDecodeError(str(err)) from None
    if problem := content_problem(video_id, actual, uri):
        raise VideoDecodeError(problem)
    return uri if local else data


def content_problem(video_id: str, actual: str, uri: str) -> str | None:
    """The quarantine reason of a row whose ``video_id`` is not the content id of its file, else None."""
    if actual == video_id:
        return None
    return (f"video_id {video_id} does not match the file: {uri} holds the video with content id {actual} "
            f"(expected {video_id}, actual {actual}); the row names another video, or its URI resolves to "
            f"other content than when the manifest was written ({RELATIVE_RULE})")


__all__ = ["URI_BASE_KEY", "base_of", "check_rows", "checked_video_source", "content_problem", "folder_of", "read_manifest", "resolve", "write_manifest"]
