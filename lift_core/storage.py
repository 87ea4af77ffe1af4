"""fsspec storage helpers and the stage-output convention shared by every stage.

Every stage writes under ``<run_root>/<stage>/<key>/`` and ends by writing ``_SUCCESS.json``.
``key`` hashes the upstream keys, the stage's config section and the code version, so a rerun with
the same inputs finds ``_SUCCESS.json`` and skips the stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

SUCCESS_FILE = "_SUCCESS.json"
_CODE_VERSION: str | None = None


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


def exists(uri: str) -> bool:
    fs, path = fs_and_path(uri)
    return fs.exists(path)


def makedirs(uri: str) -> None:
    fs, path = fs_and_path(uri)
    fs.makedirs(path, exist_ok=True)


def read_bytes(uri: str) -> bytes:
    fs, path = fs_and_path(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write to a temporary sibling, then move into place, so readers never see a partial file."""
    fs, path = fs_and_path(uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[-1]}" if parent else f".tmp-{uuid.uuid4().hex}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


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


def hash_parts(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stage_key(stage: str, upstream: Iterable[str], config_fingerprint: str, extra: Any = None) -> str:
    return hash_parts(stage, sorted(upstream), config_fingerprint, code_version(), extra)


@dataclass
class StageResult:
    """What a stage reports: written as ``_SUCCESS.json`` and passed between Prefect tasks."""

    stage: str
    key: str
    out_uri: str
    outputs: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageResult":
        return cls(**{k: d[k] for k in ("stage", "key", "out_uri", "outputs", "counts", "metrics") if k in d})


def stage_dir(run_root: str, stage: str, key: str) -> str:
    return join(run_root, stage, key)


def load_success(out_uri: str) -> StageResult | None:
    uri = join(out_uri, SUCCESS_FILE)
    if not exists(uri):
        return None
    return StageResult.from_dict(read_json(uri))


def mark_success(result: StageResult) -> StageResult:
    write_json(join(result.out_uri, SUCCESS_FILE), result.to_dict())
    return result


def local_path(uri: str) -> str | None:
    """The local filesystem path of ``uri``, or None when it is remote."""
    fs, path = fs_and_path(uri)
    return path if protocol_of(fs) in ("file", "local") else None


def abspath_if_local(uri: str) -> str:
    return os.path.abspath(uri) if "://" not in str(uri) else str(uri)


def fingerprint_uri(uri: str) -> str:
    """A content fingerprint of an input: a stage's key when it is a stage output, else its bytes.

    Stage outputs live in ``<run_root>/<stage>/<key>/``; their ``_SUCCESS.json`` names the key, so
    downstream keys chain without rereading large outputs. Other files hash their bytes; folders
    hash their listing (relative names and sizes).
    """
    fs, path = fs_and_path(uri)
    probe = path if fs.isdir(path) else path.rsplit("/", 1)[0]
    for _ in range(3):
        success = f"{probe}/{SUCCESS_FILE}"
        if fs.exists(success):
            with fs.open(success, "rb") as f:
                key = json.loads(f.read()).get("key", "")
            return hash_parts("stage-output", key, path[len(probe):])
        if "/" not in probe.strip("/"):
            break
        probe = probe.rsplit("/", 1)[0]
    if fs.isdir(path):
        listing = sorted((p[len(path):], fs.size(p)) for p in fs.find(path) if "/." not in p[len(path):])
        return hash_parts("dir", listing)
    return content_id(uri)
