"""The per-critic lease lock: exclusive, stale locks of dead or silent holders are broken once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from lift_core.rescore.lock import LeaseLock, LockLost, LockTimeout


def _holder(pid: int, heartbeat: float, token: str = "old") -> str:
    return json.dumps({"token": token, "host": socket.gethostname(), "pid": pid, "heartbeat": heartbeat,
                       "acquired": heartbeat})


def test_second_holder_waits_then_times_out(tmp_path):
    uri = str(tmp_path / "c.lock")
    with LeaseLock(uri) as first:
        with pytest.raises(LockTimeout, match="another rescore run is in progress"):
            LeaseLock(uri, wait_s=0.3, poll_s=0.05).acquire()
        first.heartbeat()
    assert not os.path.exists(uri)  # released
    LeaseLock(uri, wait_s=0).acquire().release()


def test_lock_of_a_killed_process_is_broken(tmp_path):
    uri = tmp_path / "c.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    uri.write_text(_holder(dead.pid, time.time()))  # fresh heartbeat, but its process is gone
    lock = LeaseLock(str(uri), wait_s=0).acquire()
    assert lock.broke_stale and str(dead.pid) in lock.broke_stale[0]
    assert json.loads(uri.read_text())["token"] == lock.token
    lock.release()


def test_lock_with_an_old_heartbeat_is_broken_and_its_holder_learns_it(tmp_path):
    uri = str(tmp_path / "c.lock")
    silent = LeaseLock(uri, ttl_s=0.2).acquire()
    with pytest.raises(LockTimeout):  # alive and fresh: not stale yet
        LeaseLock(uri, ttl_s=60, wait_s=0).acquire()
    time.sleep(0.3)
    taker = LeaseLock(uri, ttl_s=0.2, wait_s=0).acquire()
    assert taker.broke_stale
    with pytest.raises(LockLost):
        silent.heartbeat()
    silent.release()  # not ours any more: must not remove the taker's lock
    assert json.loads(open(uri).read())["token"] == taker.token
    taker.release()


def test_threads_never_hold_it_together(tmp_path):
    uri = str(tmp_path / "c.lock")
    inside, overlaps = [0], [0]
    guard = threading.Lock()

    def work():
        for _ in range(5):
            with LeaseLock(uri, wait_s=30, poll_s=0.01):
                with guard:
                    inside[0] += 1
                    overlaps[0] += inside[0] > 1
                time.sleep(0.005)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 0
