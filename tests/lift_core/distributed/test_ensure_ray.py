"""``ensure_ray`` starts Ray once when stages running side by side in one process call it together."""

from __future__ import annotations

import threading
import time

import ray

from lift_core.config import RayConfig
from lift_core.distributed import ray_runtime


def test_concurrent_callers_start_ray_once(monkeypatch):
    started = threading.Event()
    inits: list[RayConfig] = []

    def fake_init(cfg: RayConfig) -> None:  # as slow as a real start, so the callers do overlap
        time.sleep(0.3)
        inits.append(cfg)
        started.set()

    monkeypatch.setattr(ray, "is_initialized", started.is_set)
    monkeypatch.setattr(ray_runtime, "_init_ray", fake_init)
    callers = [threading.Thread(target=ray_runtime.ensure_ray, args=(RayConfig(num_cpus=1),)) for _ in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(10)
    assert len(inits) == 1 and inits[0].num_cpus == 1
