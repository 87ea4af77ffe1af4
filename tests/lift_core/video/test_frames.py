"""The frames Parquet contract: written once, read back by pyarrow alone, by iter/read helpers and by Ray Data."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lift_core import storage
from lift_core.video.frames import (
    frames_table,
    frames_to_numpy,
    iter_frames,
    read_frames,
    read_frames_dataset,
)


def _rows(n: int, t: int = 4, h: int = 8, w: int = 12, offset: int = 0) -> list[dict]:
    rng = np.random.RandomState(offset)
    return [
        {"video_id": f"v{offset + i}", "frames": rng.randint(0, 256, (t, h, w, 3)).astype(np.uint8),
         "frame_indices": list(range(0, 2 * t, 2)), "num_frames_total": 2 * t, "fps": 8.0}
        for i in range(n)
    ]


@pytest.fixture()
def shards(tmp_path):
    rows = _rows(3) + _rows(2, offset=3)
    storage.write_table(str(tmp_path / "frames/part-a.parquet"), frames_table(rows[:3]))
    storage.write_table(str(tmp_path / "frames/part-b.parquet"), frames_table(rows[3:]))
    return str(tmp_path / "frames"), {r["video_id"]: r["frames"] for r in rows}


def test_contract_columns_and_roundtrip(shards):
    uri, expected = shards
    table = pq.read_table(f"{uri}/part-a.parquet")
    assert table.column_names == ["video_id", "frames", "frame_indices", "num_frames_total", "fps", "height", "width"]
    assert table.schema.field("frames").metadata[b"encoding"] == b"npy"
    rows = list(iter_frames(uri))
    assert [r["video_id"] for r in rows] == ["v0", "v1", "v2", "v3", "v4"]
    for r in rows:
        assert r["frames"].dtype == np.uint8 and r["frames"].shape == (4, 8, 12, 3)
        assert np.array_equal(r["frames"], expected[r["video_id"]])
        assert (r["height"], r["width"], r["num_frames_total"]) == (8, 12, 8)
        assert r["frame_indices"] == [0, 2, 4, 6] and r["fps"] == pytest.approx(8.0)


def test_filter_by_video_id(shards):
    uri, expected = shards
    got = read_frames(uri, video_ids=["v4", "v1", "nope"])
    assert set(got) == {"v1", "v4"} and np.array_equal(got["v4"], expected["v4"])
    assert read_frames(uri, video_ids=[]) == {}
    with pytest.raises(FileNotFoundError):
        read_frames(uri + "-missing")


def test_readable_with_pyarrow_and_numpy_only(shards):
    """No Ray and no lift_core needed to read a shard: a consumer outside the pipeline can."""
    uri, expected = shards
    code = textwrap.dedent(f"""
        import io, sys
        import numpy as np, pyarrow.parquet as pq
        t = pq.read_table({uri + '/part-b.parquet'!r})
        a = np.load(io.BytesIO(t.column("frames")[0].as_py()))
        assert "ray" not in sys.modules and "lift_core" not in sys.modules
        print(t.column("video_id")[0].as_py(), a.dtype, a.shape, int(a.sum()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["v3", "uint8", "(4,", "8,", "12,", "3)", str(int(expected["v3"].sum()))]


def test_frames_to_numpy_accepts_every_batch_form(shards):
    uri, expected = shards
    table = pq.read_table(f"{uri}/part-a.parquet")
    want = [expected[v] for v in ("v0", "v1", "v2")]
    col = table.column("frames")
    forms = {
        "chunked": col,
        "array": col.combine_chunks(),
        "numpy-object": np.array(col.to_pylist(), dtype=object),
        "pandas": table.to_pandas()["frames"],
        "list-of-arrays": want,
        "stacked": np.stack(want),
        "fixed-shape-tensor": pa.FixedShapeTensorArray.from_numpy_ndarray(np.stack(want)),
    }
    for name, form in forms.items():
        got = frames_to_numpy(form)
        assert len(got) == 3, name
        assert all(np.array_equal(g, w) for g, w in zip(got, want)), name


def test_frames_table_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        frames_table([])
    with pytest.raises(ValueError, match="uint8"):
        frames_table([{**_rows(1)[0], "frames": np.zeros((4, 8, 12), np.uint8)}])


def test_ray_dataset_batches(ray_session, shards):
    uri, expected = shards
    ds = read_frames_dataset(uri)

    def sums(batch):
        arrays = frames_to_numpy(batch["frames"])
        ids = batch["video_id"] if not isinstance(batch, pa.Table) else batch.column("video_id").to_pylist()
        return {"video_id": np.array([str(i) for i in ids]), "sum": np.array([int(a.sum()) for a in arrays])}

    for fmt in ("numpy", "pyarrow"):
        rows = ds.map_batches(sums, batch_format=fmt, batch_size=2).take_all()
        assert {r["video_id"]: r["sum"] for r in rows} == {k: int(v.sum()) for k, v in expected.items()}, fmt
