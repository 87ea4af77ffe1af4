"""The actor pool that scoring, generation and latent caching share: threads per actor, lost rows fail."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lift_core.distributed.actor_pool import ActorPool, map_on_actor_pool, shard_name, shard_run_id


@pytest.fixture(scope="module")
def doubler_actor():
    """An actor that loads nothing: doubles ``x``, reports its thread count, and drops ``x == drop``.
    Defined in a function so that Ray ships it by value (workers cannot import test modules)."""

    class Doubler:
        def __init__(self, drop: int | None = None, num_threads: int | None = None):
            self.drop = drop
            self.num_threads = num_threads

        def __call__(self, batch: pa.Table) -> pa.Table:
            rows = [r for r in batch.to_pylist() if r["x"] != self.drop]
            return pa.table({"y": [2 * r["x"] for r in rows], "threads": [self.num_threads] * len(rows)},
                            schema=pa.schema([("y", pa.int64()), ("threads", pa.int64())]))

    return Doubler


def test_results_stream_back_in_bounded_batches(ray_session, doubler_actor):
    source = pa.table({"x": list(range(10))})
    batches = list(map_on_actor_pool(source, doubler_actor, {}, pool=ActorPool(actors=1, num_cpus=2), batch_size=3,
                                     expected_rows=10, what="doubling", result_rows=4))
    assert max(b.num_rows for b in batches) <= 4
    rows = pa.concat_tables(batches).to_pylist()
    assert sorted(r["y"] for r in rows) == [2 * x for x in range(10)]
    assert {r["threads"] for r in rows} == {2}  # an actor's torch threads: the CPUs it reserves


def test_lost_rows_fail_after_the_rest_came_back(ray_session, doubler_actor):
    source = pa.table({"x": list(range(6))})
    got = []
    with pytest.raises(RuntimeError, match="doubling: 5 of 6 results came back; rerun to resume"):
        for batch in map_on_actor_pool(source, doubler_actor, {"drop": 3}, pool=ActorPool(), batch_size=2,
                                       expected_rows=6, what="doubling"):
            got.extend(batch.column("y").to_pylist())
    assert sorted(got) == [0, 2, 4, 8, 10]  # what came back was handed over (and written) first


def test_shard_names_sort_in_write_order_across_runs():
    first, second = shard_run_id(), shard_run_id()
    names = [shard_name(first, 1), shard_name(first, 10), shard_name(second, 0)]
    assert sorted(names) == names
