"""Start or attach to Ray from config: local by default, a cluster when ``ray.address`` is set.

A local instance serves this machine only, so it binds every port it opens (GCS, raylet, object
manager, workers, dashboard) to loopback: nothing on the network can reach it. Ray >= 2.59 also turns
token authentication on for it by default. A cluster (``ray.address`` or ``LIFT_RAY_ADDRESS``) is
attached to as it is; docker-compose.yml runs its cluster with token auth (``RAY_AUTH_MODE=token``
and ``RAY_AUTH_TOKEN`` from ``.env``), and this process must have the same two variables.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
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


# Known-harmless lines of Ray, dropped at their logger, by message (logger name -> message prefix):
KNOWN_NOISE = {
    # Ray Train (2.5x) starts a PlacementGroupCleaner actor per run. It polls the controller's state through
    # the State API, which the dashboard serves; without a dashboard (``ray.include_dashboard: false``, the
    # local default) every poll fails and logs this, every few seconds, into the driver's terminal.
    # Harmless here: the cleaner only matters when the controller dies while its driver lives on, and a
    # local instance ends with its driver.
    "ray.train.v2._internal.execution.controller.placement_group_cleaner":
        "Failed to query Ray Train Controller actor state",
    # Ray >= 2.59 turns token authentication on for a new local instance when RAY_AUTH_MODE is unset, and
    # says so at every start. That is the setting this module documents and wants (a user's RAY_AUTH_MODE
    # still wins). Setting the variable ourselves is not enough: Ray caches its config at import.
    "ray._private.authentication.authentication_token_setup":
        "Token authentication is enabled for this Ray cluster",
}


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_known_noise() -> None:
    """The known-harmless log lines of Ray (``KNOWN_NOISE``), filtered at their logger (idempotent).

    Runs in the driver and, as Ray's ``worker_process_setup_hook``, in every worker process of our jobs
    (the PlacementGroupCleaner is one of them)."""
    for name, prefix in KNOWN_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropMessage(prefix))


_INIT_LOCK = threading.Lock()  # stages running side by side in one process start Ray once between them


def ensure_ray(cfg: RayConfig | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    with _INIT_LOCK:
        if not ray.is_initialized():
            _init_ray(cfg or RayConfig())


def _init_ray(cfg: RayConfig) -> None:
    import ray

    # Ray workers must import our packages: they share the driver's working dir on a local cluster.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    quiet_known_noise()
    kwargs: dict = {"include_dashboard": cfg.include_dashboard, "log_to_driver": True,
                    "runtime_env": {"worker_process_setup_hook": f"{__name__}.quiet_known_noise"}}
    address = cfg.address or os.environ.get("LIFT_RAY_ADDRESS")
    if address:
        host = address.split("://")[-1].rsplit(":", 1)[0]
        # A local instance of this machine listens on loopback only: attach as a loopback node too, or
        # this driver would look for its raylet at the machine's network address and never connect.
        with loopback_node() if host in (LOOPBACK, "localhost") else contextlib.nullcontext():
            ray.init(address=address, **kwargs)
        configure_ray_data(cfg)
        return
    if cfg.num_cpus is not None:
        kwargs["num_cpus"] = cfg.num_cpus
    if cfg.num_gpus is not None:
        kwargs["num_gpus"] = cfg.num_gpus
    if cfg.object_store_memory is not None:
        kwargs["object_store_memory"] = int(cfg.object_store_memory)
    with loopback_node():
        ray.init(dashboard_host=LOOPBACK, **kwargs)
    configure_ray_data(cfg)


def configure_ray_data(cfg: RayConfig) -> None:
    """This driver's Ray Data settings: per-operator bars off (the stages draw one bar each from the counts
    they see arrive, and Prefect artifacts carry the same progress), and the no-progress guard as
    ``ray.data_no_progress_timeout_s`` says (off by default: a stage waiting for CPUs is not hung)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_no_progress_timeout_s = cfg.data_no_progress_timeout_s or -1  # -1: Ray's "off"
