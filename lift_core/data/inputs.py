"""Reading users' input files: regular files only, bounded, and one entry never takes its file down.

Every command reads a JSON source through ``load_json_list`` (the ingest stage, ``lift ingest``,
``lift score``, ``lift import-scores``), so all of them accept and reject the same entries:

- the file is read only when it is a regular file within ``data.max_json_bytes`` and
  ``data.read_timeout_s`` (``storage.input_blocks``): a FIFO or ``/dev/zero`` is refused, not read;
- text is UTF-8; an invalid byte stays in its string as a lone surrogate (``surrogateescape``), so it
  rejects only the entry that holds it; a leading byte-order mark is dropped;
- the top-level list is decoded entry by entry: an entry nested deeper than the parser can follow
  (``RecursionError``), or holding a number Python refuses to convert, becomes a ``BadEntry`` with
  the reason, and the entries around it are kept. A syntax error stays the whole file's: past it,
  where an entry ends is unknown.

Sidecars and ``captions.json`` (one value per file) go through ``load_json_value``: any problem is a
``ValueError`` naming the file, which rejects that file's videos only.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from lift_core import storage
from lift_core.config import DataConfig
from lift_core.data.sources import SourceError

_DATA = DataConfig.model_fields


@dataclass(frozen=True)
class InputLimits:
    """The ``data.*`` bounds every command applies to what it reads (``from_config``); defaults are
    the config's."""

    max_caption_chars: int | None = _DATA["max_caption_chars"].default
    max_video_bytes: int = _DATA["max_video_bytes"].default
    max_json_bytes: int = _DATA["max_json_bytes"].default
    read_timeout_s: float | None = _DATA["read_timeout_s"].default

    @classmethod
    def from_config(cls, data: DataConfig) -> "InputLimits":
        return cls(data.max_caption_chars, data.max_video_bytes, data.max_json_bytes, data.read_timeout_s)

    def video_content_id(self, uri: str) -> str:
        """The ``video_id`` of the video at ``uri``: a regular file within ``data.max_video_bytes``."""
        return storage.input_content_id(uri, self.max_video_bytes, self.read_timeout_s,
                                        limit_name="data.max_video_bytes")

    def read_json_bytes(self, uri: str) -> bytes:
        return storage.read_input_bytes(uri, self.max_json_bytes, self.read_timeout_s, limit_name="data.max_json_bytes")


@dataclass(frozen=True)
class BadEntry:
    """An entry of a JSON list that could not be decoded; the others are kept."""

    reason: str

    def __repr__(self) -> str:
        return f"<unreadable entry: {self.reason}>"


def usable(entry: Any) -> Any:
    """``entry`` itself, or ``ValueError`` with the reason when it is a ``BadEntry``."""
    if isinstance(entry, BadEntry):
        raise ValueError(entry.reason)
    return entry


def decode_text(raw: bytes) -> str:
    """UTF-8 text of a JSON file; an invalid byte stays as a lone surrogate, so it rejects only its entry."""
    return raw.decode("utf-8", "surrogateescape").removeprefix("\ufeff")


def _cannot_read(uri: str, err: OSError) -> str:
    # A refusal names the file first already.
    return f"cannot read {err}" if isinstance(err, storage.InputRefusedError) else f"cannot read {uri}: {err}"


def _read_text(uri: str, limits: InputLimits) -> str:
    try:
        return decode_text(limits.read_json_bytes(uri))
    except FileNotFoundError:
        raise SourceError(f"source not found: {uri}") from None
    except OSError as err:
        raise SourceError(_cannot_read(uri, err)) from None


def _entry_problem(err: BaseException) -> str:
    if isinstance(err, RecursionError):
        return (f"nested too deeply to read (deeper than the JSON parser's limit of about "
                f"{sys.getrecursionlimit()} levels)")
    return f"cannot be decoded: {' '.join(str(err).split())[:300]}"


_WS = re.compile(r"[ \t\n\r]*")
_STRUCTURE = re.compile(r'["\[\]{}]')
_STRING_END = re.compile(r'["\\]')
_SCALAR_END = re.compile(r"[,\]}\s]")


def _string_end(text: str, i: int) -> int:
    """The index after the JSON string that starts at ``text[i]`` (a quote)."""
    i += 1
    while m := _STRING_END.search(text, i):
        if m.group() == '"':
            return m.end()
        i = m.end() + 1  # skip the escaped character
    raise ValueError("unterminated string")


def _value_end(text: str, i: int) -> int:
    """The index after the JSON value that starts at ``text[i]``, found without recursion (a value
    that the decoder refused, e.g. nested 100,000 levels deep)."""
    if text[i] == '"':
        return _string_end(text, i)
    if text[i] not in "[{":
        m = _SCALAR_END.search(text, i)
        return m.start() if m else len(text)
    depth = 0
    while m := _STRUCTURE.search(text, i):
        ch, i = m.group(), m.end()
        if ch == '"':
            i = _string_end(text, m.start())
        elif ch in "[{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unterminated array or object")


def _invalid(uri: str, msg: str, text: str, pos: int) -> SourceError:
    return SourceError(f"{uri} is not valid JSON: {json.JSONDecodeError(msg, text, pos)}")


def _top_level(uri: str, text: str) -> Any:
    """The whole document, for a file that is not a list: only its type is reported."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SourceError(f"{uri} is not valid JSON: {err}") from None
    except (RecursionError, ValueError) as err:
        raise SourceError(f"{uri}: {_entry_problem(err)}") from None


def parse_json_list(uri: str, text: str) -> list[Any]:
    """The entries of the top-level JSON list in ``text`` (from ``uri``), one ``BadEntry`` per entry
    that cannot be decoded; ``SourceError`` naming ``uri`` when the file is not a JSON list."""
    decoder = json.JSONDecoder()
    i = _WS.match(text, 0).end()
    if not text.startswith("[", i):
        data = _top_level(uri, text)
        raise SourceError(f"{uri}: expected a JSON list at the top level, got {type(data).__name__}")
    entries: list[Any] = []
    i = _WS.match(text, i + 1).end()
    if text.startswith("]", i):
        i += 1
    else:
        while True:
            start = i
            try:
                value, i = decoder.raw_decode(text, i)
            except json.JSONDecodeError as err:
                raise SourceError(f"{uri} is not valid JSON: {err}") from None
            except (RecursionError, ValueError) as err:
                try:
                    i = _value_end(text, start)
                except ValueError as why:
                    raise _invalid(uri, f"entry {len(entries)}: {why}", text, start) from None
                value = BadEntry(_entry_problem(err))
            entries.append(value)
            i = _WS.match(text, i).end()
            if text.startswith(",", i):
                i = _WS.match(text, i + 1).end()
                continue
            if text.startswith("]", i):
                i += 1
                break
            raise _invalid(uri, "Expecting ',' delimiter", text, i)
    if _WS.match(text, i).end() != len(text):
        raise _invalid(uri, "Extra data", text, i)
    return entries


def load_json_list(uri: str, limits: InputLimits | None = None) -> list[Any]:
    """The entries of the top-level JSON list of the file at ``uri`` (see the module docstring);
    ``SourceError`` when the file is missing, refused (not a regular file, too big, too slow), not
    JSON or not a list."""
    return parse_json_list(uri, _read_text(uri, limits or InputLimits()))


def load_json_value(uri: str, limits: InputLimits | None = None) -> Any:
    """The JSON value of a one-value file (a sidecar, ``captions.json``); ``ValueError`` naming the
    file for any problem (refused, not JSON, nested too deeply)."""
    try:
        text = decode_text((limits or InputLimits()).read_json_bytes(uri))
    except OSError as err:
        raise ValueError(_cannot_read(uri, err)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{uri} is not valid JSON: {err}") from None
    except (RecursionError, ValueError) as err:
        raise ValueError(f"{uri}: {_entry_problem(err)}") from None


def deciding_entry(entries: Sequence[Any], rules: Iterable[tuple[str, Callable[[dict], bool]]]) -> tuple[str, int] | None:
    """``(name, index)`` of the first rule that the first matching entry satisfies: format detection
    that looks past entries which decide nothing (``null``, a string, a dict of other keys)."""
    rules = list(rules)
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            for name, test in rules:
                if test(entry):
                    return name, i
    return None


__all__ = ["BadEntry", "InputLimits", "decode_text", "deciding_entry", "load_json_list", "load_json_value",
           "parse_json_list", "usable"]
