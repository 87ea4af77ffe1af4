"""Discovery of generated videos under fsspec URIs, with content ids and captions.

A watched URI is one of:

- a folder of videos (the ``video-dir`` source format's convention: a caption comes from ``captions.json``
  at the folder's root, mapping a file name or relative path to a caption, else from a sidecar
  ``<name>.json`` holding ``{"caption": ...}``);
- a manifest Parquet (``uri`` and ``caption`` columns, as the manifest contract);
- a LiFT inference JSON (``[{video, caption}]``, videos resolve next to it).

``video_id`` is the content id (``storage.content_id``), so a renamed or copied file keeps its id.
Hashing means reading every byte, so ids are cached in the store's index keyed by (uri, version),
where the version is what the listing says about the bytes (size plus ETag or mtime): an unchanged
file is never reread. Captions are only read for the videos that will be scored.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from lift_core import storage
from lift_core.data.inputs import InputLimits, load_json_value
from lift_core.data.manifest import read_manifest
from lift_core.data.sources import VIDEO_EXTENSIONS, read_source, text_problem
from lift_core.rescore.store import modified_time
from lift_core.schemas import quarantine_row

# Quarantine stages: discovery problems (no caption, unreadable) are retried every run; a video whose
# content does not decode is settled for its (video_id, critic_id), as a score would be.
STAGE = "rescore-discover"
CAPTIONS_FILE = "captions.json"


@dataclass(frozen=True)
class VideoFile:
    uri: str
    version: str  # changes whenever the bytes do: "<size>:<etag or mtime>"
    modified: datetime | None
    root: str  # the watched URI it was found under
    caption: str | None = None  # known from a manifest; folders resolve it later
    video_id: str | None = None


@dataclass
class Listing:
    files: list[VideoFile]
    quarantine: list[dict[str, Any]]  # entries that cannot be used (missing file, bad manifest entry)
    missing: list[str] = field(default_factory=list)  # watched URIs that do not exist (yet), with ``missing_ok``


def _version(info: Mapping[str, Any]) -> str:
    size = info.get("size")
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    if tag is None:
        when = modified_time(info)
        tag = f"{when.timestamp():.6f}" if when else (info.get("ino") or "")
    return f"{size}:{str(tag).strip(chr(34))}"


def _is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def _list_folder(uri: str) -> list[VideoFile]:
    fs, path = storage.fs_and_path(uri)
    base = path.rstrip("/")
    fs.invalidate_cache(base)
    found = fs.find(base, detail=True)
    return [
        VideoFile(storage.to_uri(fs, p), _version(info), modified_time(info), uri)
        for p, info in sorted(found.items())
        if _is_video(p) and "/." not in p[len(base):]  # hidden files and temp names of writers in progress
    ]


def _stat_entries(root: str, entries: Sequence[tuple[str, str]]) -> Listing:
    """(uri, caption) entries of a manifest -> files, or quarantine rows for the missing ones."""
    files, bad = [], []

    def stat(entry: tuple[str, str]):
        uri, caption = entry
        fs, path = storage.fs_and_path(uri)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return quarantine_row(uri, STAGE, f"listed in {root} but not found")
        if info.get("type") == "directory":
            return quarantine_row(uri, STAGE, f"listed in {root} but is a directory")
        return VideoFile(uri, _version(info), modified_time(info), root, caption)

    with ThreadPoolExecutor(8) as ex:
        for item in ex.map(stat, entries):
            (files if isinstance(item, VideoFile) else bad).append(item)
    return Listing(files, bad)


def _list_parquet_manifest(uri: str) -> Listing:
    t = read_manifest(uri)  # relative URIs resolve against the manifest, never the working directory
    missing = {"uri", "caption"} - set(t.column_names)
    if missing:
        raise ValueError(f"manifest {uri} lacks columns {sorted(missing)}")
    entries, bad = [], []
    for i, (u, c) in enumerate(zip(t.column("uri").to_pylist(), t.column("caption").to_pylist())):
        if not u or not c:
            bad.append(quarantine_row(u, STAGE, f"{uri}[{i}]: entry needs a uri and a non-empty caption"))
        else:
            entries.append((str(u), str(c)))
    listing = _stat_entries(uri, entries)
    return Listing(listing.files, bad + listing.quarantine)


def _list_json_manifest(uri: str, limits: InputLimits | None = None) -> Listing:
    result = read_source("lift-inference", uri, limits=limits or InputLimits())
    listing = _stat_entries(uri, [(r["uri"], r["caption"]) for r in result.records])
    bad = [quarantine_row(r.file, STAGE, str(r)) for r in result.rejects]
    return Listing(listing.files, bad + listing.quarantine)


def list_videos(uris: Iterable[str], missing_ok: bool = False, limits: InputLimits | None = None) -> Listing:
    """Every video under the watched URIs (folders or manifests); a LiFT JSON is read within ``limits``.

    A URI that does not exist is an error, unless ``missing_ok``: then it holds nothing yet and is
    listed in ``Listing.missing`` (a watched folder that no generation has written to).
    """
    files: list[VideoFile] = []
    bad: list[dict[str, Any]] = []
    missing: list[str] = []
    for uri in uris:
        fs, path = storage.fs_and_path(uri)
        fs.invalidate_cache(path.rstrip("/"))
        if not fs.exists(path):
            if missing_ok:
                missing.append(uri)
                continue
            raise FileNotFoundError(f"generations URI not found: {uri}")
        if fs.isdir(path):
            files.extend(_list_folder(uri))
            continue
        if path.endswith(".parquet"):
            listing = _list_parquet_manifest(uri)
        elif path.endswith(".json"):
            listing = _list_json_manifest(uri, limits)
        else:
            raise ValueError(f"generations URI {uri}: expected a folder, a manifest .parquet or a LiFT .json")
        files.extend(listing.files)
        bad.extend(listing.quarantine)
    # Overlapping watched URIs list a file twice: it is one file (copies are found by content later).
    unique: dict[str, VideoFile] = {}
    for f in files:
        unique.setdefault(f.uri, f)
    return Listing(list(unique.values()), bad, missing)


# --------------------------------------------------------------------------- content ids
def assign_video_ids(
    files: Sequence[VideoFile],
    index: Mapping[tuple[str, str], str],
    workers: int = 8,
    hasher: Callable[[str], str] = InputLimits().video_content_id,  # regular files only, bounded
) -> tuple[list[VideoFile], list[dict[str, str]], list[dict[str, Any]]]:
    """Files with their ``video_id``, the new index rows, and quarantine rows for unreadable files.

    Only files whose (uri, version) is not in ``index`` are read and hashed (in threads: remote reads
    are I/O bound).
    """
    todo = [f for f in files if (f.uri, f.version) not in index]

    def hash_one(f: VideoFile):
        try:
            return hasher(f.uri)
        except (OSError, ValueError) as err:  # vanished between listing and reading, permission, ...
            return err

    with ThreadPoolExecutor(max(1, workers)) as ex:
        hashed = dict(zip((f.uri for f in todo), ex.map(hash_one, todo)))
    out, new_index, bad = [], [], []
    for f in files:
        vid = index.get((f.uri, f.version))
        if vid is None:
            got = hashed[f.uri]
            if isinstance(got, Exception):
                bad.append(quarantine_row(f.uri, STAGE, got))
                continue
            vid = got
            new_index.append({"uri": f.uri, "version": f.version, "video_id": vid})
        out.append(replace(f, video_id=vid))
    return out, new_index, bad


def unique_by_content(files: Sequence[VideoFile]) -> tuple[list[VideoFile], dict[str, list[VideoFile]]]:
    """One file per ``video_id`` (the oldest, then by URI) and, per id, its copies: never scored twice."""
    groups: dict[str, list[VideoFile]] = {}
    far = datetime.max.replace(tzinfo=timezone.utc)
    for f in sorted(files, key=lambda f: (f.modified or far, f.uri)):
        assert f.video_id is not None
        groups.setdefault(f.video_id, []).append(f)
    return [g[0] for g in groups.values()], {vid: g[1:] for vid, g in groups.items() if len(g) > 1}


# --------------------------------------------------------------------------- captions
class _CaptionResolver:
    """The video-dir caption convention, reading each root's ``captions.json`` at most once."""

    def __init__(self, limits: InputLimits | None = None) -> None:
        self._shared: dict[str, dict[str, str] | Exception] = {}
        self._limits = limits or InputLimits()

    def _shared_for(self, root: str) -> dict[str, str] | Exception:
        if root not in self._shared:
            uri = storage.join(root, CAPTIONS_FILE)
            try:
                data = load_json_value(uri, self._limits) if storage.exists(uri) else {}
                if not isinstance(data, dict):
                    raise ValueError(f"{CAPTIONS_FILE} must map file names to captions")
                self._shared[root] = data
            except ValueError as err:
                self._shared[root] = ValueError(f"{uri}: {err}")
        return self._shared[root]

    def _checked(self, caption: object, where: str) -> str:
        """A caption from a file, held to the ingest rules (text, ``data.max_caption_chars``)."""
        if problem := text_problem(caption, "caption", self._limits.max_caption_chars):
            raise ValueError(f"{problem} (from {where})")
        return str(caption)

    def caption(self, f: VideoFile) -> str:
        """The caption, or ``ValueError`` saying why there is none."""
        if f.caption:
            return f.caption
        shared = self._shared_for(f.root)
        rel = f.uri[len(f.root.rstrip("/")) + 1:] if f.uri.startswith(f.root.rstrip("/") + "/") else f.uri
        name = f.uri.rsplit("/", 1)[-1]
        caption = (shared.get(name) or shared.get(rel)) if isinstance(shared, dict) else None
        if caption:
            return self._checked(caption, storage.join(f.root, CAPTIONS_FILE))
        sidecar = f.uri.rsplit(".", 1)[0] + ".json"
        if storage.exists(sidecar):
            try:
                data = load_json_value(sidecar, self._limits)
            except ValueError as err:
                raise ValueError(f"bad sidecar {sidecar}: {err}") from None
            caption = data.get("caption") if isinstance(data, dict) else None
            if caption:
                return self._checked(caption, sidecar)
            raise ValueError(f"sidecar {sidecar} has no non-empty 'caption'")
        why = f"; {shared}" if isinstance(shared, Exception) else ""
        raise ValueError(f"no caption: no sidecar {sidecar.rsplit('/', 1)[-1]} and not in {CAPTIONS_FILE}{why}")


def attach_captions(
    files: Sequence[VideoFile], copies: Mapping[str, Sequence[VideoFile]] | None = None,
    limits: InputLimits | None = None,
) -> tuple[list[VideoFile], list[dict[str, Any]]]:
    """Files with captions, and quarantine rows (with their video_id) for those without one.

    A file without a caption of its own takes the first caption among its ``copies`` (same content).
    Caption files are read within ``limits`` (the config's ``data.*`` bounds).
    """
    resolver = _CaptionResolver(limits)

    def one(f: VideoFile):
        first_err: Exception | None = None
        for candidate in [f, *((copies or {}).get(f.video_id or "", []))]:
            try:
                return replace(f, caption=resolver.caption(candidate))
            except (ValueError, OSError) as err:
                first_err = first_err or err
        return quarantine_row(f.uri, STAGE, first_err, f.video_id)

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, files))
    return [r for r in results if isinstance(r, VideoFile)], [r for r in results if not isinstance(r, VideoFile)]

