"""A command's output paths, checked against its inputs before any work starts.

A file written where a folder is lands inside that folder under a temporary name; a file written
over an input (``--videos m.parquet --out m.parquet``, or the input's quarantine sidecar) destroys it;
a file written inside an input folder changes that input for the next run. ``check_outputs`` refuses
each of these with one line naming both paths.

Paths are compared after resolving symlinks, and local files that exist are compared by inode too,
so a link or a hard link to an input is that input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

from lift_core import storage

FILE, FOLDER, PARENT = "file", "folder", "parent"
# FILE: one file written in place. FOLDER: a folder whose files are written or replaced (an input
# inside it is at risk). PARENT: a folder that only holds the command's other outputs.


class OutputPathError(ValueError):
    """An output path that would land elsewhere, or overwrite or change an input of the same run."""


@dataclass(frozen=True)
class Output:
    what: str  # how the user named it: "--out", "--out's quarantine sidecar", ...
    uri: str
    kind: str = FILE


@dataclass(frozen=True)
class _Where:
    protocol: str
    path: str

    @classmethod
    def of(cls, uri: str) -> "_Where":
        fs, path = storage.fs_and_path(uri)
        proto = storage.protocol_of(fs)
        if proto in ("file", "local"):
            return cls("file", os.path.realpath(path))
        return cls(proto, path.rstrip("/"))

    def inside(self, folder: "_Where") -> bool:
        return self.protocol == folder.protocol and self.path.startswith(folder.path.rstrip("/") + "/")

    def same(self, other: "_Where") -> bool:
        if self.protocol != other.protocol:
            return False
        if self.path == other.path:
            return True
        if self.protocol == "file" and os.path.exists(self.path) and os.path.exists(other.path):
            return os.path.samefile(self.path, other.path)
        return False


def _is_dir(uri: str) -> bool:
    fs, path = storage.fs_and_path(uri)
    return fs.isdir(path)


def _exists(uri: str) -> bool:
    fs, path = storage.fs_and_path(uri)
    return fs.exists(path)


def check_outputs(outputs: Sequence[Output], inputs: Iterable[tuple[str, str | None]]) -> None:
    """Raise ``OutputPathError`` when an output cannot be written as asked without harm.

    ``inputs`` are ``(what, uri)`` pairs (``None`` uris are skipped): every file and folder the same
    command reads. Refused: a FILE output that is an existing folder; a FOLDER or PARENT output that is
    an existing file; an output that is an input; an output inside an input folder; an input inside a
    FOLDER output.
    """
    given = [(what, uri, _Where.of(uri)) for what, uri in inputs if uri]
    for out in outputs:
        where = _Where.of(out.uri)
        if out.kind == FILE and _is_dir(out.uri):
            raise OutputPathError(f"{out.what} {out.uri} is a folder: give the path of the file to write "
                                  "(a file is never written inside it)")
        if out.kind in (FOLDER, PARENT) and _exists(out.uri) and not _is_dir(out.uri):
            raise OutputPathError(f"{out.what} {out.uri} is a file: give a folder")
        for what, uri, place in given:
            if where.same(place):
                raise OutputPathError(f"{out.what} {out.uri} is the input {what} {uri}: writing it would destroy "
                                      "that input; give another path")
            if out.kind != PARENT and where.inside(place):
                raise OutputPathError(f"{out.what} {out.uri} is inside the input folder {what} {uri}: writing "
                                      "there would change that input; give a path outside it")
            if out.kind == FOLDER and place.inside(where):
                raise OutputPathError(f"the input {what} {uri} is inside {out.what} {out.uri}, which this command "
                                      "writes; give another path")


def sidecar_quarantine(uri: str) -> str:
    """``<base>.quarantine.parquet`` beside a table ``<base>.parquet``: ingest's and score's rejects."""
    base = uri[: -len(".parquet")] if uri.endswith(".parquet") else uri
    return f"{base}.quarantine.parquet"


def table_inputs(what: str, uri: str | None) -> list[tuple[str, str | None]]:
    """A table input and, when it has one, its quarantine sidecar: the record of what was dropped from
    it, which no output of a later command may replace."""
    if not uri:
        return []
    side = sidecar_quarantine(uri)
    return [(what, uri)] + ([(f"{what}'s quarantine", side)] if uri.endswith(".parquet") and _exists(side) else [])


__all__ = ["FILE", "FOLDER", "PARENT", "Output", "OutputPathError", "check_outputs", "sidecar_quarantine",
           "table_inputs"]
