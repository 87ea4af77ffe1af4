"""Source readers: the contract between a source format's reader and the stages that read sources.

A reader turns one source (a file or folder at an fsspec URI) into records of the manifest (or
prompt) contract plus rejects. It never drops an entry silently: every malformed entry becomes a
``Reject`` with the file, the entry index and the reason.

The readers of every source format live in ``data_catalog`` (DESIGN.md: ``data_catalog`` imports
``lift_core``, never the reverse). They reach this registry as a plugin: a distribution declares an
entry point in the ``lift.readers`` group that names a mapping ``{format: reader}``; the registry
loads every such entry point, once, on first use (``importlib.metadata``). A notebook or a test can
also call ``register_reader`` directly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Mapping, Protocol

ENTRY_POINT_GROUP = "lift.readers"
# What counts as a video in a folder source (the video-dir format, rescore's watched folders).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass
class Reject:
    file: str
    index: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}[{self.index}]" if self.index is not None else self.file
        return f"{where}: {self.reason}"


@dataclass
class ReadResult:
    kind: str  # "videos" or "prompts"
    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    ratings: int = 0  # (video, dimension) labels read


class SourceError(ValueError):
    """The source as a whole is unreadable (missing file, not JSON, wrong top-level shape, unknown format)."""


class Reader(Protocol):
    def __call__(self, uri: str, videos_root: str | None, source: str = ...) -> ReadResult: ...


_readers: dict[str, Reader] = {}
_plugins_loaded = False
_lock = threading.Lock()


def _add(fmt: str, reader: Reader, origin: str) -> None:
    known = _readers.get(fmt)
    if known is not None and known is not reader:
        raise SourceError(f"format {fmt!r} from {origin}: a reader for it is already registered ({known!r})")
    _readers[fmt] = reader


def _load_plugins() -> None:
    global _plugins_loaded
    with _lock:
        if _plugins_loaded:
            return
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            readers = ep.load()
            if not isinstance(readers, Mapping):
                raise SourceError(f"entry point {ep.name} = {ep.value!r} ({ENTRY_POINT_GROUP}): expected a mapping "
                                  f"{{format: reader}}, got {type(readers).__name__}")
            for fmt, reader in readers.items():
                _add(fmt, reader, f"entry point {ep.value!r}")
        _plugins_loaded = True


def register_reader(fmt: str, reader: Reader) -> None:
    """Add a reader for ``fmt``; registering another reader under a known format is an error."""
    _load_plugins()
    with _lock:
        _add(fmt, reader, "register_reader")


def reader_formats() -> tuple[str, ...]:
    """Every registered format, in registration order."""
    _load_plugins()
    return tuple(_readers)


def reader_for(fmt: str) -> Reader:
    _load_plugins()
    if fmt in _readers:
        return _readers[fmt]
    if not _readers:
        raise SourceError(
            f"unknown format {fmt!r}: no readers are registered (entry point group {ENTRY_POINT_GROUP!r}); "
            "install the project (pip install -e .) so that data_catalog registers its readers"
        )
    raise SourceError(f"unknown format {fmt!r}; expected one of {', '.join(_readers)}")


def read_source(fmt: str, uri: str, videos_root: str | None = None, source: str | None = None) -> ReadResult:
    """Read one source with the reader of ``fmt``; ``source`` overrides the reader's default source name."""
    reader = reader_for(fmt)
    kwargs = {"source": source} if source else {}
    return reader(uri, videos_root, **kwargs)
