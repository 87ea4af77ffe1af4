"""A local Ray instance started by ``ensure_ray`` listens on loopback only (issue 18, finding 7).

Ray's default binds GCS, raylet, object manager and worker ports on every interface. The check runs
in a child process (the test session may already hold its own Ray) and reads the listening sockets
of every process that Ray started there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import json, os

    import psutil
    import ray

    from lift_core.config import RayConfig
    from lift_core.distributed.ray_runtime import ensure_ray

    ensure_ray(RayConfig(num_cpus=1))

    @ray.remote
    def node_ip():
        return ray.util.get_node_ip_address()

    @ray.remote
    def worker_filters():  # installed by the setup hook, not by importing the module
        import logging
        from lift_core.distributed.ray_runtime import KNOWN_NOISE
        return {name: len(logging.getLogger(name).filters) for name in KNOWN_NOISE}

    worker_ip = ray.get(node_ip.remote())  # a worker exists: its ports count too
    listening = []
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.append([proc.name(), conn.laddr.ip, conn.laddr.port])
        except psutil.Error:
            pass
    print("RESULT " + json.dumps({"listening": listening, "worker_ip": worker_ip,
                                  "gcs": ray.get_runtime_context().gcs_address,
                                  "worker_filters": ray.get(worker_filters.remote()),
                                  "env_left": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}))
    """
)

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def test_a_local_ray_instance_listens_on_loopback_only():
    child = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"rc={child.returncode}\n{child.stdout[-2000:]}\n{child.stderr[-4000:]}"
    result = json.loads(lines[0].split(" ", 1)[1])
    names = {name for name, _, _ in result["listening"]}
    assert {"gcs_server", "raylet"} <= names, result["listening"]  # the scan sees Ray's servers
    exposed = [entry for entry in result["listening"] if entry[1] not in LOOPBACK]
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert result["worker_ip"] == "127.0.0.1" and result["gcs"].startswith("127.0.0.1:")
    assert result["env_left"] is None  # the switch was for starting Ray only, not left in the environment
    # Ray's known-harmless lines are filtered in the driver and, through the setup hook, in every worker.
    assert "Token authentication is enabled" not in child.stderr
    assert result["worker_filters"] and all(n == 1 for n in result["worker_filters"].values()), result


def test_known_noise_filters_drop_only_their_message():
    import logging

    from lift_core.distributed.ray_runtime import KNOWN_NOISE, quiet_known_noise

    quiet_known_noise()
    quiet_known_noise()  # idempotent: one filter per logger
    for name, prefix in KNOWN_NOISE.items():
        logger = logging.getLogger(name)
        assert len(logger.filters) == 1
        noise = logger.makeRecord(name, logging.WARNING, __file__, 1, prefix + ". Continuing.", None, None)
        other = logger.makeRecord(name, logging.WARNING, __file__, 1, "Failed to clean up placement group", None, None)
        assert not logger.filter(noise) and logger.filter(other)


WAITING_CHILD = textwrap.dedent(
    """
    import json, time

    import ray
    from ray.data.exceptions import ExecutionTimeoutError

    from lift_core.config import RayConfig
    from lift_core.distributed.ray_runtime import configure_ray_data, ensure_ray

    @ray.remote(num_cpus=1)
    def hold_the_cpu(seconds):
        time.sleep(seconds)

    def decode_while_another_stage_holds_the_cpu():
        held = hold_the_cpu.remote(8)
        time.sleep(2)  # it is running: the only CPU is taken
        try:
            return len(ray.data.range(4, override_num_blocks=2).map(lambda r: r).take_all())
        except ExecutionTimeoutError:
            return "timed out"
        finally:
            ray.get(held)

    ensure_ray(RayConfig(num_cpus=1, data_no_progress_timeout_s=2))
    guarded = decode_while_another_stage_holds_the_cpu()
    configure_ray_data(RayConfig())  # the default
    print("RESULT " + json.dumps({"guarded": guarded, "default": decode_while_another_stage_holds_the_cpu()}))
    """
)


def test_a_ray_data_stage_waits_for_cpus_another_stage_holds_unless_a_guard_is_set():
    """The demo's decode of generated videos queues behind critic training, which holds every CPU; on a busy
    machine for longer than Ray Data's default 30-minute no-progress guard, which failed the demo's flow."""
    child = subprocess.run([sys.executable, "-c", WAITING_CHILD], cwd=REPO, capture_output=True, text=True, timeout=300,
                           check=False)
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"rc={child.returncode}\n{child.stdout[-2000:]}\n{child.stderr[-4000:]}"
    assert json.loads(lines[0].split(" ", 1)[1]) == {"guarded": "timed out", "default": 4}
