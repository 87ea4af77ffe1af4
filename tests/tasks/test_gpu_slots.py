"""GPU stages hold slots of a Prefect global concurrency limit, so two runs never oversubscribe the GPUs."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from lift_core.config import load_config
from lift_core.stages import STAGES
from tasks.common import gpu_slots

pytestmark = pytest.mark.integration


def _cfg(*extra: str):
    return load_config("configs/demo.yaml", list(extra))


def test_gpu_needs_follow_the_config():
    def need(cfg, stage: str) -> int:
        return STAGES[stage].gpus(cfg)

    cpu = _cfg()
    assert {s: need(cpu, s) for s in STAGES} == dict.fromkeys(STAGES, 0)
    big = load_config("configs/lift-cogvideox-2b.yaml")
    assert need(big, "train_critic") == 8 and need(big, "align") == 8
    assert need(big, "score") == 8 and need(big, "generate") == 8 and need(big, "decode") == 0
    half = _cfg("score.num_actors=3", "score.num_gpus_per_actor=0.5")
    assert need(half, "score") == 2  # 1.5 GPUs of actors occupy 2 devices
    assert need(half, "evaluate") == 2  # evaluate scores with the same actors


def test_cpu_stages_take_no_slot_and_create_no_limit(prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    name = f"lift-gpu-{uuid.uuid4().hex[:8]}"
    with gpu_slots(_cfg(f"prefect.gpu_concurrency_limit={name}"), "score") as held:
        assert held == 0
    with get_client(sync_client=True) as client, pytest.raises(ObjectNotFound):
        client.read_global_concurrency_limit_by_name(name)


def test_a_second_run_waits_for_the_gpus_the_first_one_holds(prefect_api):
    from prefect.client.orchestration import get_client

    name = f"lift-gpu-{uuid.uuid4().hex[:8]}"
    gpu = ["score.num_actors=2", "score.num_gpus_per_actor=1", "prefect.gpu_slots=2",
           f"prefect.gpu_concurrency_limit={name}"]
    first = _cfg(*gpu)
    second = _cfg(*gpu, "prefect.gpu_wait_s=2")

    holding, release = threading.Event(), threading.Event()

    def run_first():
        with gpu_slots(first, "score") as held:
            assert held == 2
            holding.set()
            release.wait(60)

    t = threading.Thread(target=run_first)
    t.start()
    try:
        assert holding.wait(60)
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
        assert limit.limit == 2 and limit.active_slots == 2
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # both GPUs are taken: the second run waits, then gives up
            with gpu_slots(second, "score"):
                pytest.fail("acquired GPUs that another run holds")
        assert time.monotonic() - started >= 1.5
    finally:
        release.set()
        t.join(60)
    with gpu_slots(second, "score") as held:  # released: now it gets them
        assert held == 2
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 0


def test_a_stage_wanting_more_gpus_than_the_limit_takes_the_whole_limit(prefect_api):
    name = f"lift-gpu-{uuid.uuid4().hex[:8]}"
    cfg = _cfg("critic.train.use_gpu=true", "critic.train.num_workers=4", "prefect.gpu_slots=2",
               f"prefect.gpu_concurrency_limit={name}")
    with gpu_slots(cfg, "train_critic") as held:
        assert held == 2
