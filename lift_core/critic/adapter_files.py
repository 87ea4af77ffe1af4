"""Checks of a critic adapter folder's files, before any video is decoded or any model is loaded.

A truncated or corrupt adapter otherwise fails deep inside a scoring actor, after the videos were
decoded, as a bare ``ActorDiedError``. ``check_adapter`` reads only what is cheap: the config JSON,
each safetensors file's header (the tensor table and the offsets it promises, against the file's
size), and each ``.bin`` pickle's zip directory and CRCs. It raises ``CorruptAdapter`` naming the
file and the cause.
"""

from __future__ import annotations

import json
import struct
import zipfile
from typing import Any

from lift_core import storage

CONFIG = "adapter_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Bytes per element of each safetensors dtype (the format's own table).
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "U16": 2, "I16": 2, "F16": 2,
                "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8}
_MAX_HEADER = 100 << 20  # the safetensors library refuses larger headers too


class CorruptAdapter(ValueError):
    """An adapter file that cannot be loaded; the message names the file and the cause."""


def safetensors_problem(fs: Any, path: str) -> str | None:
    """Why the safetensors file ``path`` cannot load (read from its header and size), or None."""
    size = fs.size(path)
    if size < 8:
        return f"truncated: {size} bytes, less than the 8-byte header length"
    with fs.open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > _MAX_HEADER:
            return f"not a safetensors file: its header length reads {n} bytes"
        if 8 + n > size:
            return f"truncated: the header alone needs {8 + n} bytes, the file has {size}"
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        return f"its header is not valid JSON ({err})"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    data = size - 8 - n
    spans = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(x) for x in t["data_offsets"])
            count = 1
            for d in t["shape"]:
                count *= int(d)
            want = count * _DTYPE_BYTES[t["dtype"]]
        except (KeyError, TypeError, ValueError):
            return f"tensor {name!r}: malformed entry in the header"
        if end - begin != want:
            return f"tensor {name!r}: {end - begin} bytes for {t['dtype']} {t['shape']}, which needs {want}"
        if end > data:
            return f"truncated: tensor {name!r} ends at byte {end} of the data, the file holds {data}"
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            return f"the tensors' data overlap or leave a gap at byte {covered}"
        covered = end
    if covered != data:
        return f"{data - covered} bytes after the last tensor: the file was altered or appended to"
    return None


def bin_problem(fs: Any, path: str) -> str | None:
    """Why the torch pickle ``path`` cannot load, or None: a zip archive (``torch.save``'s format)
    whose members all pass their CRC check."""
    with fs.open(path, "rb") as f:
        try:
            with zipfile.ZipFile(f) as archive:
                bad = archive.testzip()
        except zipfile.BadZipFile as err:
            return f"not a torch.save archive or truncated ({err})"
        except (OSError, EOFError, zipfile.LargeZipFile) as err:
            return f"unreadable archive ({type(err).__name__}: {err})"
    return None if bad is None else f"member {bad} fails its CRC check: the file is corrupt"


def check_adapter(adapter_dir: str) -> list[str]:
    """The weight files (relative names, sorted) of the adapter folder ``adapter_dir`` after checking
    that each can load; raises ``FileNotFoundError`` when it is not an adapter folder, ``CorruptAdapter``
    naming the file and the cause when a file is damaged."""
    fs, path = storage.fs_and_path(adapter_dir)
    base = path.rstrip("/")
    cfg_uri = storage.join(adapter_dir, CONFIG)
    if not fs.isfile(f"{base}/{CONFIG}"):
        raise FileNotFoundError(f"not a PEFT adapter dir (no {CONFIG}): {adapter_dir}")
    try:
        cfg = json.loads(storage.read_bytes(cfg_uri))
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptAdapter(f"{cfg_uri}: not valid JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise CorruptAdapter(f"{cfg_uri}: expected a JSON object, found {type(cfg).__name__}")
    weights = sorted(p[len(base) + 1:] for p in fs.find(base) if p.endswith(WEIGHT_SUFFIXES))
    if not weights:
        raise FileNotFoundError(f"adapter dir has no weights (*.safetensors or *.bin): {adapter_dir}")
    for rel in weights:
        full = f"{base}/{rel}"
        why = safetensors_problem(fs, full) if rel.endswith(".safetensors") else bin_problem(fs, full)
        if why is not None:
            raise CorruptAdapter(f"{storage.to_uri(fs, full)}: {why}")
    return weights


__all__ = ["CorruptAdapter", "bin_problem", "check_adapter", "safetensors_problem"]
