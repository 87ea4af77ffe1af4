"""One Ray Data actor pool for the stages that load a model once per actor: scoring, generation, latent caching.

Each of them maps pyarrow batches through a callable class whose ``__init__`` loads the model
(``map_batches(..., compute=ActorPoolStrategy(size=n))``) and streams the results back to the
driver, which writes them out as they come (so memory stays flat and a killed run keeps what it
wrote). What they share lives here:

- the pool: actor count, CPUs and GPUs per actor; each actor's torch uses as many threads as it has
  CPUs (the actor class takes ``num_threads``);
- the stream of result batches, which fails when rows were lost rather than hide it (a rerun
  resumes from what was written);
- shard names that sort in write order across runs, so a compaction can let the newest row win.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa

from lift_core.config import RayConfig


@dataclass(frozen=True)
class ActorPool:
    """How many actors, and what each one reserves."""

    actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    @property
    def threads(self) -> int:
        return max(1, int(self.num_cpus))


def map_on_actor_pool(
    source: pa.Table | Any,
    actor_cls: type,
    constructor_kwargs: dict[str, Any],
    *,
    pool: ActorPool,
    batch_size: int,
    expected_rows: int,
    what: str,
    result_rows: int = 256,
    ray_config: RayConfig | None = None,
) -> Iterator[pa.Table]:
    """Stream ``source`` (a table or a Ray dataset) through ``actor_cls`` on ``pool``; yield its results.

    Actors get batches of ``batch_size`` rows and are built with ``constructor_kwargs`` plus
    ``num_threads``. The driver gets pyarrow batches of at most ``result_rows`` rows. After the last
    one, ``RuntimeError`` names ``what`` when fewer than ``expected_rows`` rows came back.
    """
    import ray
    from ray.data import ActorPoolStrategy

    from lift_core.distributed.ray_runtime import ensure_ray

    ensure_ray(ray_config)
    ds = ray.data.from_arrow(source) if isinstance(source, pa.Table) else source
    results = ds.map_batches(
        actor_cls,
        fn_constructor_kwargs={**constructor_kwargs, "num_threads": pool.threads},
        batch_size=max(1, batch_size),
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=max(1, pool.actors)),
        num_gpus=pool.num_gpus or None,
        num_cpus=pool.num_cpus,
    )
    returned = 0
    for batch in results.iter_batches(batch_size=max(1, result_rows), batch_format="pyarrow"):
        returned += batch.num_rows
        yield batch
    if returned < expected_rows:
        raise RuntimeError(f"{what}: {returned} of {expected_rows} results came back; rerun to resume the rest")


def shard_run_id() -> str:
    """A prefix for this run's shard names: they sort after every earlier run's."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"


def shard_name(run: str, seq: int) -> str:
    return f"part-{run}-{seq:06d}.parquet"
