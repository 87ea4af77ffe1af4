"""fsspec storage helpers and the stage-output convention shared by every stage.

Every stage writes under ``<run_root>/<stage>/<key>/`` and ends by writing ``_SUCCESS.json``.
``key`` hashes the upstream keys, the stage's config section and the code version, so a rerun with
the same inputs finds ``_SUCCESS.json`` and skips the stage. ``_SUCCESS.json`` lists every output
file with its size, Parquet row count and sha256; a cache hit checks sizes and row counts (and the
hashes when ``LIFT_VERIFY_OUTPUTS=1`` or ``verify=True``), so a truncated or deleted output makes
the stage run again instead of failing, or silently shrinking, the stages after it.

Storage the run cannot use (disk full, permission denied on a write, missing credentials) raises
``ResourceError``: one line naming the path and the cause, which survives Ray's task boundary.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat as stat_mod
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

SUCCESS_FILE = "_SUCCESS.json"
VERIFY_ENV = "LIFT_VERIFY_OUTPUTS"  # "1": a cache hit also checks the sha256 of every output file
_CODE_VERSION: str | None = None

log = logging.getLogger("lift.storage")


def code_version() -> str:
    """Hash of the lift_core and data_catalog sources: part of every stage key."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        h = hashlib.sha256()
        root = Path(__file__).resolve().parent.parent
        for pkg in ("lift_core", "data_catalog"):
            for path in sorted((root / pkg).rglob("*")):
                if path.suffix in {".py", ".yaml", ".jinja"} and "__pycache__" not in path.parts:
                    h.update(str(path.relative_to(root)).encode())
                    h.update(path.read_bytes())
        _CODE_VERSION = h.hexdigest()[:16]
    return _CODE_VERSION


def join(base: str, *parts: str) -> str:
    base = str(base)
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{str(part).strip('/')}"
    return out


def fs_and_path(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs, path


def protocol_of(fs: fsspec.AbstractFileSystem) -> str:
    proto = fs.protocol
    return proto[0] if isinstance(proto, (tuple, list)) else proto


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Turn an fs-native path back into a URI (plain absolute path for local files)."""
    proto = protocol_of(fs)
    if proto in ("file", "local"):
        return path
    return f"{proto}://{path.lstrip('/')}" if proto != "memory" else f"memory://{path}"


# --------------------------------------------------------------------------- resource errors
# errno -> what the user is told. Permission errors count only on writes: an unreadable input is a
# bad input (quarantined by its stage), an unwritable output stops the run.
_FULL_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system"}
_PERMISSION_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
# Credential failures of botocore (s3fs), google-auth (gcsfs) and azure-identity (adlfs), matched by
# class name so none of them has to be installed.
_CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                      "NoAuthTokenError", "DefaultCredentialsError", "RefreshError", "CredentialUnavailableError",
                      "ClientAuthenticationError"}
# The last line of a worker traceback that Ray Data folded into its UserCodeException text.
_TRACEBACK_OSERROR = re.compile(r"^(?:[\w.]+\.)?\w*Error: \[Errno (\d+)\] ([^\n]*?)(?:: '([^'\n]*)')?\s*$", re.MULTILINE)
_TRACEBACK_RESOURCE = re.compile(r"^(?:[\w.]+\.)?ResourceError: (.+)$", re.MULTILINE)
_TRACEBACK_CREDENTIALS = re.compile(
    rf"^(?:[\w.]+\.)?({'|'.join(sorted(_CREDENTIAL_ERRORS))}): (.+)$", re.MULTILINE)


class ResourceError(RuntimeError):
    """Storage the run cannot use: disk full, permission denied, missing credentials.

    The message is one line, ``<action> <path>: <cause>``. Not an ``OSError`` on purpose: handlers that
    turn an ``OSError`` into one quarantined input (or a retry) must let it through, since every
    other input would hit it too. Pickles with its fields, so it crosses Ray's task boundary intact.
    """

    def __init__(self, path: str, reason: str, action: str = ""):
        self.path, self.reason, self.action = path, reason, action
        head = f"{action} {path}".strip()
        super().__init__(f"{head}: {reason}" if head else reason)

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.action))


def _oserror_reason(err: OSError, writing: bool) -> str | None:
    kinds = {**_FULL_ERRNOS, **(_PERMISSION_ERRNOS if writing else {})}
    if err.errno not in kinds:
        return None
    detail = err.strerror or os.strerror(err.errno)
    return f"{kinds[err.errno]} ({detail})" if detail.lower() != kinds[err.errno] else kinds[err.errno]


def _causes(err: BaseException):
    """``err`` and what it wraps: ``__cause__``/``__context__`` and Ray's ``RayTaskError.cause``."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (getattr(e, "cause", None), e.__cause__, e.__context__) if isinstance(x, BaseException))


def as_resource_error(err: BaseException, path: str, action: str, *, writing: bool) -> ResourceError | None:
    """``err`` as a ``ResourceError`` about ``path`` (default: the failing file) when a resource failure
    caused it, else None."""
    for e in _causes(err):
        if isinstance(e, ResourceError):
            return e
        if any(c.__name__ in _CREDENTIAL_ERRORS for c in type(e).__mro__):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return ResourceError(path, f"missing or invalid credentials ({first})", action)
        if isinstance(e, OSError) and (reason := _oserror_reason(e, writing)):
            return ResourceError(path or str(e.filename or ""), reason, action)
    return None


def resource_error_in(err: BaseException) -> ResourceError | None:
    """The resource failure behind any error, wherever it was raised, or None.

    Looks through exception chains and Ray's wrappers: ``RayTaskError.cause``, and the worker
    traceback that Ray Data keeps only as text in its ``UserCodeException``. The CLI and the task
    layer print ``str()`` of the result: one line naming the path and the cause.
    """
    if found := as_resource_error(err, "", "", writing=True):
        return found
    text = str(err)
    if m := _TRACEBACK_RESOURCE.findall(text):
        return ResourceError("", m[-1].strip())
    if m := _TRACEBACK_CREDENTIALS.findall(text):
        return ResourceError("", f"missing or invalid credentials ({m[-1][1].strip()})")
    for code, strerror, filename in reversed(_TRACEBACK_OSERROR.findall(text)):
        if reason := _oserror_reason(OSError(int(code), strerror), writing=True):
            return ResourceError(filename, reason)
    return None


def exists(uri: str) -> bool:
    fs, path = fs_and_path(uri)
    return fs.exists(path)


def makedirs(uri: str) -> None:
    fs, path = fs_and_path(uri)
    try:
        fs.makedirs(path, exist_ok=True)
    except Exception as err:
        if resource := as_resource_error(err, uri, "creating folder", writing=True):
            raise resource from err
        raise


def read_bytes(uri: str) -> bytes:
    fs, path = fs_and_path(uri)
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except Exception as err:
        # Only run-wide causes (credentials, a full disk) change type: an unreadable input stays an
        # OSError, which its stage quarantines.
        if resource := as_resource_error(err, uri, "reading", writing=False):
            raise resource from err
        raise


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write to a temporary sibling, then move into place, so readers never see a partial file.

    A ``uri`` that is a folder raises ``IsADirectoryError`` (object stores have no folders to land in).
    On any failure the temporary file is removed (a full disk stays full otherwise); resource
    failures raise ``ResourceError`` naming ``uri``.
    """
    fs, path = fs_and_path(uri)
    if protocol_of(fs) in ("file", "local", "memory") and fs.isdir(path):
        # A move onto a folder lands inside it, under the temporary name: refuse instead.
        raise IsADirectoryError(errno.EISDIR, "is a folder: a file cannot be written in its place", uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[-1]}" if parent else f".tmp-{uuid.uuid4().hex}"
    try:
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    except BaseException as err:
        _remove_quietly(fs, tmp)
        if isinstance(err, Exception) and (resource := as_resource_error(err, uri, "writing", writing=True)):
            raise resource from err
        raise


def _remove_quietly(fs: fsspec.AbstractFileSystem, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path)
    except Exception as err:  # cleanup must not hide the error that got us here
        log.warning("could not remove the temporary file %s: %s", path, err)


def write_json(uri: str, obj: Any) -> None:
    write_bytes_atomic(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_table(uri: str, table: pa.Table) -> None:
    """Write one Parquet file atomically (deterministic bytes for the same table)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(uri, sink.getvalue().to_pybytes())


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file or a directory of Parquet shards."""
    fs, path = fs_and_path(uri)
    if fs.isdir(path):
        files = sorted(p for p in fs.find(path) if p.endswith(".parquet") and "/." not in p)
        if not files:
            raise FileNotFoundError(f"no parquet files under {uri}")
        return pa.concat_tables(
            [pq.read_table(p, filesystem=fs, columns=columns) for p in files], promote_options="default"
        )
    return pq.read_table(path, filesystem=fs, columns=columns)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_id(uri: str, chunk: int = 1 << 20) -> str:
    """The first 16 hex chars of the sha256 of the bytes at ``uri`` (the contract's ``video_id``)."""
    fs, path = fs_and_path(uri)
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- bounded input reads
# Inputs named by users (video files, JSON sources) are read only when they are regular files, up to a
# byte limit and a deadline: a FIFO or a device (``/dev/zero``) would block or never end, a 50 GB file
# would fill memory. A refusal is an ``OSError``, so the stages that quarantine an unreadable input
# quarantine it too, with the reason.
class InputRefusedError(OSError):
    """An input that is not read: not a regular file, over the byte limit, or a NUL byte in its path."""


class InputTimeoutError(InputRefusedError, TimeoutError):
    """Reading an input took longer than its deadline."""


_KINDS = ((stat_mod.S_ISFIFO, "a FIFO"), (stat_mod.S_ISCHR, "a character device"), (stat_mod.S_ISBLK, "a block device"),
          (stat_mod.S_ISSOCK, "a socket"), (stat_mod.S_ISDIR, "a directory"))


def non_regular_kind(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO"), or None for a regular file."""
    if stat_mod.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def input_blocks(uri: str, max_bytes: int, timeout_s: float | None = None, *, limit_name: str = "the byte limit",
                 chunk: int = 1 << 20) -> Iterable[bytes]:
    """The bytes of the input at ``uri`` in blocks, read only if it is a regular file of at most
    ``max_bytes`` and within ``timeout_s`` seconds (checked between blocks).

    Local files are checked with ``stat`` before they are opened, so a FIFO or a device is never
    opened (opening a FIFO blocks until a writer comes), and again on the opened descriptor, so a file
    swapped in between is caught too. A remote file must list as a ``file``. Raises
    ``InputRefusedError`` (``IsADirectoryError`` for a folder, ``FileNotFoundError`` when missing);
    ``limit_name`` names the setting in the message (``data.max_video_bytes``).
    """
    if "\x00" in str(uri):
        raise InputRefusedError(f"path contains a NUL byte: {safe_repr(uri)}")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def check(total: int, known: bool = False) -> None:
        if total > max_bytes:
            size = f"{total} bytes" if known else f"more than {max_bytes} bytes"
            raise InputRefusedError(f"{uri}: {size}, over the limit of {max_bytes} ({limit_name})")
        if deadline is not None and time.monotonic() > deadline:
            raise InputTimeoutError(f"{uri}: not read within {timeout_s:g} s")

    def refuse(mode: int) -> None:
        kind = non_regular_kind(mode)
        if kind == "a directory":
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", uri)
        if kind:
            raise InputRefusedError(f"{uri}: not a regular file ({kind}); only regular files are read")

    local = local_path(uri)
    if local is not None:
        refuse(os.stat(local).st_mode)  # follows symlinks: what would be read
        fd = os.open(local, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb", buffering=0) as f:
            st = os.fstat(fd)
            refuse(st.st_mode)
            check(st.st_size, known=True)
            total = 0
            while block := f.read(chunk):
                total += len(block)
                check(total)
                yield block
        return
    fs, path = fs_and_path(uri)
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", uri)
        if info.get("type") not in (None, "file"):
            raise InputRefusedError(f"{uri}: not a regular file ({info.get('type')}); only regular files are read")
        check(int(info.get("size") or 0), known=True)
        total = 0
        with fs.open(path, "rb") as f:
            while block := f.read(chunk):
                total += len(block)
                check(total)
                yield block
    except Exception as err:
        if resource := as_resource_error(err, uri, "reading", writing=False):
            raise resource from err
        raise


def read_input_bytes(uri: str, max_bytes: int, timeout_s: float | None = None, *,
                     limit_name: str = "the byte limit") -> bytes:
    """All of ``input_blocks``: the bytes of a regular file within the byte limit and deadline."""
    return b"".join(input_blocks(uri, max_bytes, timeout_s, limit_name=limit_name))


def input_content_id(uri: str, max_bytes: int, timeout_s: float | None = None, *,
                     limit_name: str = "the byte limit") -> str:
    """``content_id`` of an input, read through ``input_blocks`` (regular files only, bounded)."""
    h = hashlib.sha256()
    for block in input_blocks(uri, max_bytes, timeout_s, limit_name=limit_name):
        h.update(block)
    return h.hexdigest()[:16]


def safe_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters: fit for an error message about any input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def hash_parts(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stage_key(stage: str, upstream: Iterable[str], config_fingerprint: str, extra: Any = None) -> str:
    return hash_parts(stage, sorted(upstream), config_fingerprint, code_version(), extra)


@dataclass
class StageResult:
    """What a stage reports: written as ``_SUCCESS.json`` and passed between Prefect tasks.

    ``files`` is filled by ``mark_success``: per output name, what was written (``describe_output``),
    so a later cache hit can tell whether the outputs are intact. It can list thousands of files, so
    it stays out of ``to_dict`` (what tasks pass around and the CLI prints) and of equality; it lives
    in ``_SUCCESS.json`` (``to_record``).
    """

    stage: str
    key: str
    out_uri: str
    outputs: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["files"]
        return out

    def to_record(self) -> dict[str, Any]:
        """The content of ``_SUCCESS.json``: ``to_dict`` plus ``files``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageResult":
        names = ("stage", "key", "out_uri", "outputs", "counts", "metrics", "files")
        return cls(**{k: d[k] for k in names if k in d})


def stage_dir(run_root: str, stage: str, key: str) -> str:
    return join(run_root, stage, key)


def record_stage_dir(run_root: str, stage: str, record: dict[str, Any]) -> str:
    """The (absolute, when local) folder of a stage keyed by a build record alone (no input URIs)."""
    return abspath_if_local(stage_dir(run_root, stage, stage_key(stage, [], hash_parts(record))))


# --------------------------------------------------------------------------- verified stage outputs
def verify_requested(verify: bool | None = None) -> bool:
    """Whether cache hits check full hashes: ``verify`` when given, else ``LIFT_VERIFY_OUTPUTS``."""
    if verify is not None:
        return bool(verify)
    return os.environ.get(VERIFY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _is_content(rel: str) -> bool:
    """Hidden files (temp files of atomic writes) and success markers are not output content."""
    parts = rel.strip("/").split("/")
    return not any(p.startswith(".") for p in parts) and parts[-1] != SUCCESS_FILE


def _folder_files(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, int]:
    """``relative name -> size`` of the content files under a folder (one listing call)."""
    base = path.rstrip("/")
    found = fs.find(base, detail=True)
    out = {}
    for p, info in found.items():
        rel = p[len(base):].lstrip("/")
        if info.get("type", "file") == "file" and rel and _is_content(rel):
            out[rel] = int(info.get("size") or 0)
    return out


def _parquet_rows(fs: fsspec.AbstractFileSystem, path: str) -> int:
    return pq.ParquetFile(path, filesystem=fs).metadata.num_rows


def _file_sha256(fs: fsspec.AbstractFileSystem, path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _describe_file(fs: fsspec.AbstractFileSystem, path: str, size: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"size": int(size), "sha256": _file_sha256(fs, path)}
    if path.endswith(".parquet"):
        entry["rows"] = _parquet_rows(fs, path)
    return entry


def describe_output(uri: str) -> dict[str, Any]:
    """What an output holds: a file's size, sha256 and (Parquet) row count, or a folder's files.

    ``{"uri", "kind": "file", "size", "sha256"[, "rows"]}``, ``{"uri", "kind": "dir", "files":
    {relative name: {"size", "sha256"[, "rows"]}}}`` or ``{"uri", "kind": "absent"}``.
    """
    fs, path = fs_and_path(uri)
    if fs.isdir(path):
        files = {rel: _describe_file(fs, f"{path.rstrip('/')}/{rel}", size)
                 for rel, size in sorted(_folder_files(fs, path).items())}
        return {"uri": uri, "kind": "dir", "files": files}
    if fs.exists(path):
        return {"uri": uri, "kind": "file", **_describe_file(fs, path, fs.size(path))}
    return {"uri": uri, "kind": "absent"}


@dataclass(frozen=True)
class OutputProblem:
    """One output file that does not match what ``_SUCCESS.json`` recorded."""

    output: str  # the output's name in ``StageResult.outputs``
    uri: str  # the file (or folder) at fault
    reason: str

    def __str__(self) -> str:
        return f"{self.uri}: {self.reason}"


def _file_problems(name: str, uri: str, fs, path: str, recorded: dict[str, Any], size: int | None,
                   verify: bool) -> list[OutputProblem]:
    if size is None:
        return [OutputProblem(name, uri, "missing")]
    if size != recorded.get("size"):
        return [OutputProblem(name, uri, f"{size} bytes, {SUCCESS_FILE} recorded {recorded.get('size')}")]
    if "rows" in recorded:
        try:
            rows = _parquet_rows(fs, path)
        except Exception as err:  # a damaged footer is the finding itself, not a crash
            return [OutputProblem(name, uri, f"unreadable Parquet ({type(err).__name__}: {err})")]
        if rows != recorded["rows"]:
            return [OutputProblem(name, uri, f"{rows} rows, {SUCCESS_FILE} recorded {recorded['rows']}")]
    if verify and "sha256" in recorded and _file_sha256(fs, path) != recorded["sha256"]:
        return [OutputProblem(name, uri, f"sha256 differs from the one {SUCCESS_FILE} recorded")]
    return []


def output_problems(files: dict[str, Any], verify: bool | None = None) -> list[OutputProblem]:
    """How the outputs on storage differ from ``files`` (``StageResult.files``); empty when intact.

    Sizes and Parquet row counts (footers only) always; sha256 of every file when ``verify``.
    """
    verify = verify_requested(verify)
    problems: list[OutputProblem] = []
    for name, rec in sorted(files.items()):
        uri, kind = rec.get("uri", ""), rec.get("kind")
        fs, path = fs_and_path(uri)
        if kind == "file":
            size = fs.size(path) if fs.isfile(path) else None
            problems += _file_problems(name, uri, fs, path, rec, size, verify)
        elif kind == "dir":
            if not fs.isdir(path):
                problems.append(OutputProblem(name, uri, "folder missing"))
                continue
            found = _folder_files(fs, path)
            for rel, entry in sorted(rec.get("files", {}).items()):
                problems += _file_problems(name, join(uri, rel), fs, f"{path.rstrip('/')}/{rel}", entry,
                                           found.get(rel), verify)
            for rel in sorted(set(found) - set(rec.get("files", {}))):
                problems.append(OutputProblem(name, join(uri, rel), f"not written by the stage ({SUCCESS_FILE} does not list it)"))
    return problems


def read_success(out_uri: str) -> dict[str, Any] | None:
    """The raw ``_SUCCESS.json`` of a stage folder, or None when absent or unreadable."""
    uri = join(out_uri, SUCCESS_FILE)
    if not exists(uri):
        return None
    try:
        record = read_json(uri)
    except ValueError as err:
        log.warning("%s is unreadable (%s): the stage runs again", uri, err)
        return None
    return record if isinstance(record, dict) else None


def check_success(out_uri: str, verify: bool | None = None) -> tuple[StageResult | None, list[OutputProblem]]:
    """``(result, [])`` for a finished stage whose outputs are intact, ``(None, problems)`` when they
    no longer match ``_SUCCESS.json``, ``(None, [])`` when it has not finished."""
    record = read_success(out_uri)
    if record is None:
        return None, []
    problems = output_problems(record.get("files") or {}, verify)
    if problems:
        shown = "; ".join(str(p) for p in problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        log.warning("%s: outputs do not match %s, the stage runs again: %s", out_uri, SUCCESS_FILE, shown)
        return None, problems
    return StageResult.from_dict(record), []


def load_success(out_uri: str, verify: bool | None = None) -> StageResult | None:
    """The finished stage's result, or None when it must run (again).

    None when ``_SUCCESS.json`` is absent, or when an output no longer matches it: missing, another
    size or row count, a file it does not list, or (``verify``) another sha256. Each mismatch is
    logged with the file and why, and the stage recomputes. A ``_SUCCESS.json`` written before
    outputs were recorded (no ``files``) is trusted as it was.
    """
    return check_success(out_uri, verify)[0]


class StageOutputError(RuntimeError):
    """A stage's outputs do not match its ``_SUCCESS.json`` and nothing can recompute them here."""


def require_success(out_uri: str, verify: bool | None = None) -> StageResult:
    """The finished stage's result; raises ``StageOutputError`` naming the first bad file."""
    record = read_success(out_uri)
    if record is None:
        raise StageOutputError(f"{join(out_uri, SUCCESS_FILE)}: missing or unreadable; the stage has not finished")
    if problems := output_problems(record.get("files") or {}, verify):
        raise StageOutputError(f"{problems[0]} (output {problems[0].output!r} of {out_uri}; "
                               f"{len(problems)} problem(s); rerun the stage)")
    return StageResult.from_dict(record)


def mark_success(result: StageResult) -> StageResult:
    """Record ``result.files`` (sizes, row counts, hashes of every output) and write ``_SUCCESS.json``
    last, so its presence means the outputs were complete."""
    result.files = {name: describe_output(uri) for name, uri in sorted(result.outputs.items())}
    write_json(join(result.out_uri, SUCCESS_FILE), result.to_record())
    return result


def local_path(uri: str) -> str | None:
    """The local filesystem path of ``uri``, or None when it is remote."""
    fs, path = fs_and_path(uri)
    return path if protocol_of(fs) in ("file", "local") else None


def local_dir(uri: str, marker: str) -> str:
    """The folder ``uri`` as a local path that ``from_pretrained`` can read: a local folder as it is; a
    remote one copied once into ``$TMPDIR/lift-models/<hash of uri and fingerprint>`` (new content, new
    copy). ``marker`` is a file that every complete copy holds; concurrent copiers race safely."""
    fs, path = fs_and_path(uri)
    local = local_path(uri)
    if local is None:
        dest = os.path.join(tempfile.gettempdir(), "lift-models", hash_parts(uri, fingerprint_uri(uri)))
        if os.path.exists(os.path.join(dest, marker)):
            return dest
    if not fs.exists(f"{path.rstrip('/')}/{marker}"):
        raise FileNotFoundError(f"{uri} has no {marker}: not a complete model folder")
    if local is not None:
        return local
    tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
    fs.get(path.rstrip("/") + "/", tmp, recursive=True)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        os.rename(tmp, dest)
    except OSError:  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(os.path.join(dest, marker)):
            raise
    return dest


def abspath_if_local(uri: str) -> str:
    return os.path.abspath(uri) if "://" not in str(uri) else str(uri)


def fingerprint_uri(uri: str, verify: bool | None = None) -> str:
    """A content fingerprint of an input: what decides a result is its bytes, never its name or size.

    A file's is its ``content_id`` (the first 16 hex chars of its sha256); a folder's hashes the
    relative name and sha256 of each content file (hidden files and ``_SUCCESS.json`` left out), so
    a copy has the fingerprint of its original wherever it lives.

    Bytes are reread only when they may have changed. A stage output's sha256 is the one its
    ``_SUCCESS.json`` recorded (found up to three folders up) while the file keeps its recorded size
    and was last modified no later than that ``_SUCCESS.json``; other files' come from the stat cache
    (``lift_core.hash_cache``). ``verify`` (default: ``LIFT_VERIFY_OUTPUTS``, set by ``lift --verify``)
    rereads every byte, and logs a stage output whose bytes are no longer what its stage recorded: a
    changed input changes the key, never a cache hit.
    """
    verify = verify_requested(verify)
    fs, path = fs_and_path(uri)
    recorded = _StageRecord.find(fs, path)
    if fs.isdir(path):
        base = path.rstrip("/")
        infos = {p[len(base):].lstrip("/"): info for p, info in fs.find(base, detail=True).items()}
        listing = [(rel, _input_sha256(fs, f"{base}/{rel}", info, recorded, verify))
                   for rel, info in sorted(infos.items())
                   if info.get("type", "file") == "file" and rel and _is_content(rel)]
        return hash_parts("dir", listing)
    return _input_sha256(fs, path, None, recorded, verify)[:16]


def _modified_ns(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any] | None = None) -> int | None:
    """When ``path`` last changed (ns; local files: the later of mtime and ctime), or None when the
    store does not say."""
    from datetime import datetime

    if protocol_of(fs) in ("file", "local"):
        st = os.stat(path)
        return max(st.st_mtime_ns, st.st_ctime_ns)
    info = info if info is not None else fs.info(path)
    for name in ("LastModified", "last_modified", "updated", "mtime", "created"):
        value = info.get(name)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, (int, float)):
            return int(value * 1e9)
    return None


@dataclass
class _StageRecord:
    """The sha256s a finished stage's ``_SUCCESS.json`` recorded (``fs path -> (size, sha256)``) and when
    that file was written."""

    files: dict[str, tuple[int, str]]
    written_ns: int | None

    @classmethod
    def find(cls, fs: fsspec.AbstractFileSystem, path: str) -> "_StageRecord":
        """The record of the stage folder holding ``path`` (up to three folders up); empty when none."""
        probe = path.rstrip("/") if fs.isdir(path) else path.rsplit("/", 1)[0]
        for _ in range(3):
            success = f"{probe}/{SUCCESS_FILE}"
            if fs.exists(success):
                try:
                    with fs.open(success, "rb") as f:
                        outputs = json.loads(f.read()).get("files") or {}
                    return cls(cls._sha256s(fs, outputs), _modified_ns(fs, success))
                except (ValueError, AttributeError, TypeError, KeyError):
                    return cls({}, None)  # unreadable or another shape: every byte is hashed instead
            if "/" not in probe.strip("/"):
                break
            probe = probe.rsplit("/", 1)[0]
        return cls({}, None)

    @staticmethod
    def _sha256s(fs: fsspec.AbstractFileSystem, outputs: dict[str, Any]) -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        for rec in outputs.values():
            if not rec.get("uri"):
                continue
            rec_path = fs_and_path(rec["uri"])[1].rstrip("/")
            if rec.get("kind") == "file" and "sha256" in rec:
                out[rec_path] = (int(rec["size"]), rec["sha256"])
            elif rec.get("kind") == "dir":
                out.update({f"{rec_path}/{rel}": (int(e["size"]), e["sha256"])
                            for rel, e in (rec.get("files") or {}).items() if "sha256" in e})
        return out

    def sha256(self, fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any] | None) -> str | None:
        """The recorded sha256 of ``path`` while it is known unchanged: the recorded size, and modified
        no later than ``_SUCCESS.json`` (written after every output)."""
        rec = self.files.get(path)
        if rec is None or self.written_ns is None:
            return None
        size = int(info["size"]) if info and info.get("size") is not None else fs.size(path)
        modified = _modified_ns(fs, path, info)
        if size != rec[0] or modified is None or modified > self.written_ns:
            return None
        return rec[1]


def _input_sha256(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any] | None, recorded: _StageRecord,
                  verify: bool) -> str:
    """The sha256 of one input file: as its stage recorded it while known unchanged, else hashed."""
    from lift_core.hash_cache import file_sha256

    if not verify and (known := recorded.sha256(fs, path, info)) is not None:
        return known
    digest = file_sha256(fs, path, verify=verify)
    rec = recorded.files.get(path)
    if rec is not None and rec[1] != digest:
        log.warning("%s: its bytes are not those its stage recorded in %s; it is fingerprinted by its "
                    "bytes, so what reads it runs again", to_uri(fs, path), SUCCESS_FILE)
    return digest
