"""The frames Parquet contract: ``frames`` is a uint8 tensor [T, H, W, 3] per row.

Stored as Arrow's canonical ``fixed_shape_tensor`` extension, which pyarrow reads back without Ray.
Consumers use only the functions here, so the storage choice stays in one place.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lift_core import storage

META_COLUMNS = ("video_id", "frame_indices", "num_frames_total", "fps", "height", "width")


def frames_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Build a frames table from rows with ``frames`` as uint8 [T,H,W,3] arrays of one shape."""
    if not rows:
        return empty_frames_table()
    stacked = np.stack([np.asarray(r["frames"], dtype=np.uint8) for r in rows])
    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(stacked)
    return pa.table(
        {
            "video_id": pa.array([r["video_id"] for r in rows], pa.string()),
            "frames": tensor,
            "frame_indices": pa.array([list(map(int, r["frame_indices"])) for r in rows], pa.list_(pa.int32())),
            "num_frames_total": pa.array([int(r["num_frames_total"]) for r in rows], pa.int32()),
            "fps": pa.array([float(r["fps"]) for r in rows], pa.float32()),
            "height": pa.array([int(r["frames"].shape[1]) for r in rows], pa.int32()),
            "width": pa.array([int(r["frames"].shape[2]) for r in rows], pa.int32()),
        }
    )


def empty_frames_table() -> pa.Table:
    return pa.table(
        {
            "video_id": pa.array([], pa.string()),
            "frames": pa.array([], pa.binary()),
            "frame_indices": pa.array([], pa.list_(pa.int32())),
            "num_frames_total": pa.array([], pa.int32()),
            "fps": pa.array([], pa.float32()),
            "height": pa.array([], pa.int32()),
            "width": pa.array([], pa.int32()),
        }
    )


def frames_to_numpy(column: Any) -> list[np.ndarray]:
    """uint8 [T,H,W,3] arrays from a frames column in any shape it reaches us (Arrow, numpy, lists)."""
    if isinstance(column, pa.ChunkedArray):
        return [a for chunk in column.chunks for a in frames_to_numpy(chunk)]
    if isinstance(column, pa.FixedShapeTensorArray):
        return list(column.to_numpy_ndarray().astype(np.uint8, copy=False))
    if isinstance(column, np.ndarray) and column.dtype != object and column.ndim == 5:
        return list(column.astype(np.uint8, copy=False))
    return [np.asarray(x, dtype=np.uint8) for x in column]


def shard_files(frames_uri: str) -> list[str]:
    fs, path = storage.fs_and_path(frames_uri)
    if not fs.isdir(path):
        return [frames_uri]
    names = sorted(p for p in fs.find(path) if p.endswith(".parquet") and "/." not in p[len(path):])
    return [storage.to_uri(fs, p) for p in names]


def iter_frames(frames_uri: str, video_ids: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of the frames contract, one shard at a time (memory stays flat)."""
    wanted = set(video_ids) if video_ids is not None else None
    for uri in shard_files(frames_uri):
        fs, path = storage.fs_and_path(uri)
        table = pq.read_table(path, filesystem=fs)
        if table.num_rows == 0:
            continue
        frames = frames_to_numpy(table.column("frames"))
        meta = table.select(list(META_COLUMNS)).to_pylist()
        for row, arr in zip(meta, frames):
            if wanted is None or row["video_id"] in wanted:
                row["frames"] = arr
                yield row


def read_frames(frames_uri: str, video_ids: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    return {row["video_id"]: row["frames"] for row in iter_frames(frames_uri, video_ids)}


def read_frames_dataset(frames_uri: str):
    """A Ray Dataset over the frame shards (streamed; batches carry ``frames`` as arrays)."""
    import ray.data

    files = [f for f in shard_files(frames_uri) if pq.ParquetFile(storage.fs_and_path(f)[1], filesystem=storage.fs_and_path(f)[0]).metadata.num_rows > 0]
    if not files:
        raise FileNotFoundError(f"no frames under {frames_uri}")
    fs, _ = storage.fs_and_path(files[0])
    return ray.data.read_parquet([storage.fs_and_path(f)[1] for f in files], filesystem=fs)
