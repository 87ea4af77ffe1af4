"""Source readers: the contract between a source format's reader and the stages that read sources.

A reader turns one source (a file or folder at an fsspec URI) into records of the manifest (or
prompt) contract plus rejects. It never drops an entry silently: every malformed entry becomes a
``Reject`` with the file, the entry index and the reason.

The readers of every source format live in ``data_catalog`` (DESIGN.md: ``data_catalog`` imports
``lift_core``, never the reverse). They reach this registry as a plugin: a distribution declares an
entry point in the ``lift.readers`` group that names a mapping ``{format: reader}``; the registry
loads every such entry point, once, on first use (``importlib.metadata``). A notebook or a test can
also call ``register_reader`` directly.

Bounded, decodable text: a reader that accepts the keyword ``max_caption_chars`` gets the limit
(``data.max_caption_chars``) and rejects longer captions per entry; ``text_problem`` and
``require_text`` are the checks it uses (wrong type, undecodable text such as an invalid UTF-8 byte or
a lone surrogate escape, over the limit). The ingest stage applies the same checks to every record
of every reader as a second guard (a NUL byte in a video path included).

Bounded reads: a reader that accepts the keyword ``limits`` gets the config's ``data.*`` bounds
(``lift_core.data.inputs.InputLimits``) and reads its JSON through ``inputs.load_json_list``, the one
tolerant path every command shares.
"""

from __future__ import annotations

import threading
import inspect
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Mapping, Protocol

ENTRY_POINT_GROUP = "lift.readers"
# What counts as a video in a folder source (the video-dir format, rescore's watched folders).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# The default of ``data.max_caption_chars``: generous (LiFT's longest captions are under 1,000
# characters), but a 5 MB caption never reaches a tokenizer.
DEFAULT_MAX_CAPTION_CHARS = 4000


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
    absolute_paths: int = 0  # video records whose path in the source was absolute (or a URL), not under a root
    uri: str | None = None  # the source read (``read_source`` sets it)


class SourceError(ValueError):
    """The source as a whole is unreadable (missing file, not JSON, wrong top-level shape, unknown format)."""


class Reader(Protocol):
    """``reader(uri, videos_root, source=...)``; it may also take the keyword ``max_caption_chars``."""

    def __call__(self, uri: str, videos_root: str | None, source: str = ...) -> ReadResult: ...


def safe_text(text: str) -> str:
    """``text`` with undecodable characters (lone surrogates) written as escapes: fit for a Parquet cell."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _undecodable(text: str, what: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        if 0xDC80 <= code <= 0xDCFF:  # how an invalid byte reads back (surrogateescape)
            cause = f"invalid UTF-8 byte 0x{code - 0xDC00:02X} (or a lone surrogate escape \\u{code:04x})"
        else:
            cause = f"lone surrogate escape \\u{code:04x}"
        return f"{what} is not valid text: {cause} at character {err.start}"
    return None


def text_problem(value: Any, what: str = "caption", max_chars: int | None = None, *, required: bool = True) -> str | None:
    """Why ``value`` cannot be used as ``what`` (wrong type, empty, over ``max_chars``, undecodable); else None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"empty {what}" if required else None
    if not isinstance(value, str):
        return f"{what} has type {type(value).__name__}, not text"
    if max_chars is not None and len(value) > max_chars:
        return f"{what} is {len(value)} characters, over the limit of {max_chars} (data.max_caption_chars)"
    return _undecodable(value, what)


def require_text(value: Any, what: str = "caption", max_chars: int | None = None) -> str:
    """``value`` when it is usable text (see ``text_problem``); else ValueError with the reason."""
    problem = text_problem(value, what, max_chars)
    if problem:
        raise ValueError(problem)
    return value


def record_problem(rec: dict[str, Any], kind: str, max_caption_chars: int | None = None) -> str | None:
    """Why a reader's record cannot enter the manifest (``kind`` "videos") or prompt table; else None.

    The caption must be text within the limit, a video record's ``uri`` text, and every other text
    value (reasons, tags) decodable.
    """
    problem = text_problem(rec.get("caption"), "caption", max_caption_chars)
    if problem is None and kind == "videos":
        problem = text_problem(rec.get("uri"), "video path")
        if problem is None and "\x00" in rec["uri"]:  # no file system takes it: the entry's problem, not the run's
            problem = "video path contains a NUL byte"
    for key, value in rec.items():
        if problem is not None:
            break
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and (problem := _undecodable(item, key)):
                break
    return problem


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


def _takes(reader: Reader, keyword: str) -> bool:
    try:
        params = inspect.signature(reader).parameters
    except (TypeError, ValueError):
        return False
    return keyword in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def read_source(
    fmt: str,
    uri: str,
    videos_root: str | None = None,
    source: str | None = None,
    max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS,
    *,
    limits: Any = None,
) -> ReadResult:
    """Read one source with the reader of ``fmt``; ``source`` overrides the reader's default source name.

    ``max_caption_chars`` reaches a reader that takes that keyword (every reader of ``data_catalog``
    does); ``None`` lifts the limit. ``limits`` (``lift_core.data.inputs.InputLimits``: the config's
    ``data.*`` bounds; its ``max_caption_chars`` wins) reaches a reader that takes ``limits``.
    """
    from lift_core.data.inputs import InputLimits  # it imports this module

    if limits is None:
        limits = InputLimits(max_caption_chars=max_caption_chars)
    reader = reader_for(fmt)
    kwargs: dict[str, Any] = {"source": source} if source else {}
    if _takes(reader, "max_caption_chars"):
        kwargs["max_caption_chars"] = limits.max_caption_chars
    if _takes(reader, "limits"):
        kwargs["limits"] = limits
    result = reader(uri, videos_root, **kwargs)
    if result.uri is None:
        result.uri = uri
    return result
