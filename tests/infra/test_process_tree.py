"""infra/local_stack.py's process bookkeeping (psutil, no /proc): a recorded tree is seen alive, then stopped whole."""

from __future__ import annotations

import os
import time


def test_a_spawned_tree_is_recorded_found_and_stopped(local_stack, tmp_path):
    rec = local_stack._spawn(["bash", "-c", "sleep 120 & sleep 120 & wait"], dict(os.environ), tmp_path / "tree.log")
    try:
        assert local_stack._alive(rec) and isinstance(rec["start"], float)
        deadline = time.monotonic() + 20
        while len(local_stack.descendants(rec["pid"])) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        children = local_stack.descendants(rec["pid"])
        assert len(children) == 2
        assert not local_stack._alive({**rec, "start": rec["start"] - 60})  # same pid, another process

        local_stack.stop(rec, grace=10)
        assert not local_stack._alive(rec)
        assert all(local_stack._zombie(p) or local_stack._start_time(p) is None for p in [rec["pid"], *children])
    finally:
        local_stack._signal_tree(rec, 9)


def test_a_process_that_is_gone_is_not_alive_and_has_no_children(local_stack):
    gone = {"pid": 2**22 + 12345, "start": 1.0}  # above Linux's pid_max default
    assert not local_stack._alive(gone) and local_stack._start_time(gone["pid"]) is None
    assert local_stack.descendants(gone["pid"]) == [] and local_stack._zombie(gone["pid"])
    local_stack.stop(gone)  # nothing to stop: no error
