"""The frames Parquet contract: one row per video, ``frames`` a uint8 tensor [T, H, W, 3].

Columns: ``video_id``, ``frames``, ``frame_indices``, ``num_frames_total``, ``fps``, ``height``, ``width``.

``frames`` is stored as one binary value per video holding the tensor in NumPy's ``.npy`` format
(a self-describing header with dtype and shape, then the raw bytes; the field's metadata says so).
Plain pyarrow and numpy read it back without Ray (``np.load(io.BytesIO(value))``). Parquet writes a
binary value as one blob, where a ``fixed_shape_tensor`` column costs one definition level per
byte: measured 50x slower to write (benchmarks/decode.py). Consumers use only the functions here
(``iter_frames``, ``read_frames``, ``frames_to_numpy``, ``read_frames_dataset``), so the storage
choice stays in one place; shards in the ``fixed_shape_tensor`` form are read as well.
"""

from __future__ import annotations

import io
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lift_core import storage

META_COLUMNS = ("video_id", "frame_indices", "num_frames_total", "fps", "height", "width")
FRAMES_FIELD_METADATA = {b"encoding": b"npy", b"content": b"uint8 tensor [T, H, W, 3] per video"}


def frames_schema() -> pa.Schema:
    return pa.schema(
        [
            ("video_id", pa.string()),
            pa.field("frames", pa.large_binary(), metadata=FRAMES_FIELD_METADATA),
            ("frame_indices", pa.list_(pa.int32())),
            ("num_frames_total", pa.int32()),
            ("fps", pa.float32()),
            ("height", pa.int32()),
            ("width", pa.int32()),
        ]
    )


def encode_frames(frames: np.ndarray) -> bytes:
    """One video's uint8 [T,H,W,3] frames as ``.npy`` bytes (the stored form of the ``frames`` column)."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T,H,W,3], got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def decode_frames(value: bytes | memoryview) -> np.ndarray:
    """``.npy`` bytes -> uint8 [T,H,W,3]."""
    arr = np.load(io.BytesIO(value), allow_pickle=False)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"stored frames are {arr.dtype} {arr.shape}, not uint8 [T,H,W,3]")
    return arr


def frames_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A frames table from rows with ``video_id``, ``frames`` (uint8 [T,H,W,3]), ``frame_indices``,
    ``num_frames_total`` and ``fps``; ``height`` and ``width`` come from the frames."""
    if not rows:
        raise ValueError("frames_table needs at least one row")
    arrays = [np.asarray(r["frames"]) for r in rows]
    return pa.Table.from_pydict(
        {
            "video_id": [str(r["video_id"]) for r in rows],
            "frames": [encode_frames(a) for a in arrays],
            "frame_indices": [[int(i) for i in r["frame_indices"]] for r in rows],
            "num_frames_total": [int(r["num_frames_total"]) for r in rows],
            "fps": [float(r["fps"]) for r in rows],
            "height": [int(a.shape[1]) for a in arrays],
            "width": [int(a.shape[2]) for a in arrays],
        },
        schema=frames_schema(),
    )


def frames_to_numpy(column: Any) -> list[np.ndarray]:
    """uint8 [T,H,W,3] arrays from a frames column in any form it reaches us.

    Accepts the column of a Parquet read or of a pyarrow batch (``.npy`` binary values, or the
    older ``fixed_shape_tensor`` form), the value of a numpy batch (an object array of bytes, or a
    [B,T,H,W,3] array), a pandas Series, or a list of bytes or arrays.
    """
    if isinstance(column, pa.ChunkedArray):
        return [a for chunk in column.chunks for a in frames_to_numpy(chunk)]
    if isinstance(column, pa.FixedShapeTensorArray):
        return list(column.to_numpy_ndarray().astype(np.uint8, copy=False))
    if isinstance(column, pa.Array) and (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        return [decode_frames(v.as_buffer()) for v in column]
    if isinstance(column, pa.ExtensionArray):  # another tensor extension (e.g. Ray's own)
        return list(np.asarray(column.to_numpy(zero_copy_only=False)).astype(np.uint8, copy=False))
    if isinstance(column, np.ndarray) and column.dtype != object:
        if column.ndim == 4:  # a single video
            return [column.astype(np.uint8, copy=False)]
        return list(column.astype(np.uint8, copy=False))
    out = [decode_frames(x) if isinstance(x, (bytes, bytearray, memoryview)) else np.asarray(x, np.uint8) for x in column]
    for a in out:
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"frames must be [T,H,W,3] per video, got {a.shape}")
    return out


def shard_files(frames_uri: str) -> list[str]:
    """The Parquet files of a frames output (a folder of shards or one file), in a stable order."""
    fs, path = storage.fs_and_path(frames_uri)
    if not fs.isdir(path):
        if not fs.exists(path):
            raise FileNotFoundError(f"frames not found: {frames_uri}")
        return [frames_uri]
    names = sorted(p for p in fs.find(path) if p.endswith(".parquet") and "/." not in p[len(path):])
    return [storage.to_uri(fs, p) for p in names]


def _read_shard(uri: str, wanted: set[str] | None) -> pa.Table:
    fs, path = storage.fs_and_path(uri)
    table = pq.read_table(path, filesystem=fs)
    if wanted is not None and table.num_rows:
        # Filter before converting tensors: only the wanted videos cost memory.
        table = table.filter(pc.is_in(table.column("video_id"), value_set=pa.array(sorted(wanted), pa.string())))
    return table


def iter_frames(frames_uri: str, video_ids: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of the frames contract with ``frames`` as numpy uint8 [T,H,W,3], one shard at a time."""
    wanted = {str(v) for v in video_ids} if video_ids is not None else None
    for uri in shard_files(frames_uri):
        table = _read_shard(uri, wanted)
        if table.num_rows == 0:
            continue
        frames = frames_to_numpy(table.column("frames"))
        for row, arr in zip(table.select(list(META_COLUMNS)).to_pylist(), frames):
            row["frames"] = arr
            yield row


def read_frames(frames_uri: str, video_ids: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """``video_id -> uint8 [T,H,W,3]`` for the wanted videos (all when None); loads them into memory."""
    return {row["video_id"]: row["frames"] for row in iter_frames(frames_uri, video_ids)}


def count_frames_rows(frames_uri: str) -> int:
    total = 0
    for uri in shard_files(frames_uri):
        fs, path = storage.fs_and_path(uri)
        total += pq.ParquetFile(path, filesystem=fs).metadata.num_rows
    return total


def read_frames_dataset(frames_uri: str):
    """A Ray Dataset over the frame shards (streamed). Raises FileNotFoundError when there are none."""
    import ray.data

    files = []
    for uri in shard_files(frames_uri):
        fs, path = storage.fs_and_path(uri)
        if pq.ParquetFile(path, filesystem=fs).metadata.num_rows > 0:
            files.append(path)
    if not files:
        raise FileNotFoundError(f"no decoded frames under {frames_uri}")
    fs, _ = storage.fs_and_path(frames_uri)
    return ray.data.read_parquet(files, filesystem=fs)


__all__ = [
    "META_COLUMNS",
    "count_frames_rows",
    "decode_frames",
    "encode_frames",
    "frames_schema",
    "frames_table",
    "frames_to_numpy",
    "iter_frames",
    "read_frames",
    "read_frames_dataset",
    "shard_files",
]
