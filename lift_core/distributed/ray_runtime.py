"""Start or attach to Ray from config: local by default, a cluster when ``ray.address`` is set.

A local instance serves this machine only, so it binds every port it opens (GCS, raylet, object
manager, workers, dashboard) to loopback: nothing on the network can reach it. Ray >= 2.59 also turns
token authentication on for it by default. A cluster (``ray.address`` or ``LIFT_RAY_ADDRESS``) is
attached to as it is; docker-compose.yml runs its cluster with token auth (``RAY_AUTH_MODE=token``
and ``RAY_AUTH_TOKEN`` from ``.env``), and this process must have the same two variables.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from lift_core.config import RayConfig

LOOPBACK = "127.0.0.1"
# Ray takes a node's address from this switch: off, the node is its loopback address, which Ray does by
# default on macOS and Windows. Ray reads it once, at import, into ray_constants.ENABLE_RAY_CLUSTER.
SINGLE_HOST_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_node() -> Iterator[None]:
    """While a local instance starts: its node address is loopback, so its servers bind there only.

    Set in this process (already imported Ray) and in the environment that Ray's own processes
    inherit (GCS, raylet, and the workers the raylet starts); restored afterwards, so a later
    ``ray.init(address=...)`` in this process still finds its real address.
    """
    from ray._private import ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        raise RuntimeError("this Ray version has no ray_constants.ENABLE_RAY_CLUSTER: cannot bind a local "
                           "instance to loopback; install ray>=2.59 (pyproject.toml)")
    saved_env = os.environ.pop(SINGLE_HOST_ENV, None)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_HOST_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        os.environ.pop(SINGLE_HOST_ENV, None)
        if saved_env is not None:
            os.environ[SINGLE_HOST_ENV] = saved_env


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
        host = address.split("://")[-1].rsplit(":", 1)[0]
        # A local instance of this machine listens on loopback only: attach as a loopback node too, or
        # this driver would look for its raylet at the machine's network address and never connect.
        with loopback_node() if host in (LOOPBACK, "localhost") else contextlib.nullcontext():
            ray.init(address=address, **kwargs)
        return
    if cfg.num_cpus is not None:
        kwargs["num_cpus"] = cfg.num_cpus
    if cfg.num_gpus is not None:
        kwargs["num_gpus"] = cfg.num_gpus
    if cfg.object_store_memory is not None:
        kwargs["object_store_memory"] = int(cfg.object_store_memory)
    with loopback_node():
        ray.init(dashboard_host=LOOPBACK, **kwargs)
    # Quiet the per-dataset progress bars in logs; Prefect artifacts carry progress instead.
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except Exception:  # older Ray: best effort only
        pass
