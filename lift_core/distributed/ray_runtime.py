"""Start or attach to Ray from config: local by default, a cluster when ``ray.address`` is set."""

from __future__ import annotations

import os

from lift_core.config import RayConfig


def ensure_ray(cfg: RayConfig | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    cfg = cfg or RayConfig()
    # Ray workers must import our packages: they share the driver's working dir on a local cluster.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs: dict = {"include_dashboard": cfg.include_dashboard, "log_to_driver": True}
    address = cfg.address or os.environ.get("LIFT_RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
        return
    if cfg.num_cpus is not None:
        kwargs["num_cpus"] = cfg.num_cpus
    if cfg.num_gpus is not None:
        kwargs["num_gpus"] = cfg.num_gpus
    if cfg.object_store_memory is not None:
        kwargs["object_store_memory"] = int(cfg.object_store_memory)
    ray.init(**kwargs)
    # Quiet the per-dataset progress bars in logs; Prefect artifacts carry progress instead.
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except Exception:  # older Ray: best effort only
        pass
