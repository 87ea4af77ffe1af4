"""Progress for long work: counts in the message, one renderer that draws a bar with count, rate and ETA
where stderr is a terminal and logs plain lines where it is not, and training steps relayed from the
Ray workers to the driver."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import textwrap

import pytest

from lift_core.progress import TerminalProgress, count, counted, meter_line, parse_count, tee


def test_a_count_survives_every_progress_callback():
    assert counted("decoded, 1 failed", 3, 10, "videos") == "decoded, 1 failed [3/10 videos]"
    assert parse_count("decoded, 1 failed [3/10 videos]") == ("decoded, 1 failed", 3, 10, "videos")
    assert parse_count(counted("", 0, 4, "steps")) == ("", 0, 4, "steps")
    assert parse_count("5 videos already decoded, 10 to go") is None
    seen = []
    # A stage rescales its sub-step's fraction with a lambda: the count travels in the message untouched.
    count(lambda f, m: seen.append((0.1 + 0.9 * f, m)), 5, 10, "steps", "critic training")
    both = []
    tee(lambda f, m: both.append(m), lambda f, m: both.append(m))(1.0, "x")
    assert seen == [(pytest.approx(0.55), "critic training [5/10 steps]")] and both == ["x", "x"]


def test_meter_line_has_count_rate_and_eta():
    line = meter_line("decode", 12, 24, "videos", elapsed=4.0, note="0 failed")
    assert line == "decode: 12/24 videos (50%), 3 videos/s, ETA 0:00:04, 0 failed"
    # A resumed meter counts its rate from where it started.
    assert meter_line("train", 15, 20, "steps", elapsed=10.0, initial=10) == \
        "train: 15/20 steps (75%), 0.5 steps/s, ETA 0:00:10"
    assert meter_line("x", 0, 5, "steps", elapsed=0.0) == "x: 0/5 steps (0%), ? steps/s, ETA ?"


def test_without_a_terminal_it_logs_throttled_lines():
    now, lines = [0.0], []
    p = TerminalProgress("decode", stream=io.StringIO(), emit=lines.append, interval_s=10.0, clock=lambda: now[0])
    assert p.tty is False  # asked of the stream itself: a StringIO is no terminal
    p(0.0, "5 videos already decoded, 10 to go")
    for done in range(11):
        now[0] = 2.0 * done
        count(p, done, 10, "videos", "decoded")
    assert lines == [
        "decode: 5 videos already decoded, 10 to go",
        "decode: 0/10 videos (0%), ? videos/s, ETA ?, decoded",
        "decode: 5/10 videos (50%), 0.5 videos/s, ETA 0:00:10, decoded",  # 10 s later: the next line
        "decode: 10/10 videos (100%), 0.5 videos/s, ETA 0:00:00, decoded",  # the last always
    ]
    stage = p.for_stage("score")
    count(stage, 1, 2, "pairs")
    assert lines[-1].startswith("score: 1/2 pairs") and stage.tty is False


def _child_output(script: str, terminal: bool) -> str:
    """What ``script`` writes to its stderr, which is a pseudo-terminal or a pipe."""
    args = [sys.executable, "-c", textwrap.dedent(script)]
    if not terminal:
        return subprocess.run(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                              timeout=60, check=True).stderr
    main, child = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=60) == 0, out
    os.close(main)
    return out.decode("utf-8", "replace")


CHILD = """
    import logging, sys, time
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from lift_core.progress import TerminalProgress, count
    p = TerminalProgress("decode")  # stderr, as the CLI and the stage tasks use it
    p(0.0, "10 to go")
    for i in range(11):
        count(p, i, 10, "videos", "decoded")
        time.sleep(0.01)
"""


def test_a_bar_on_a_terminal_and_plain_lines_on_a_pipe():
    bar = _child_output(CHILD, terminal=True)
    assert "\r" in bar and "decode: 10 to go" in bar
    final = bar.replace("\r\n", "\n").split("\r")[-1]
    assert "decode: 100%" in final and "10/10" in final and "videos/s" in final and "00:00<00:00" in final

    plain = _child_output(CHILD, terminal=False)
    assert "\r" not in plain
    assert plain.splitlines() == ["decode: 10 to go", "decode: 0/10 videos (0%), ? videos/s, ETA ?, decoded",
                                  plain.splitlines()[-1]]
    assert plain.splitlines()[-1].startswith("decode: 10/10 videos (100%), ")


def test_training_steps_reach_the_driver_from_a_ray_worker(ray_session):
    """The training loop's rank 0 runs in a Ray worker: its step counts reach the driver's ProgressFn."""
    from lift_core.distributed.progress_relay import StepRelay

    seen: list[tuple[float, str]] = []
    relay = StepRelay(lambda f, m: seen.append((f, m)), total=4, note="critic training", interval_s=0.05)

    class Rank0:
        is_main = True

    @ray_session.remote(num_cpus=0)
    def worker(callbacks):
        for cb in callbacks:
            cb.on_train_start(Rank0(), 1)  # resumed from step 1
            for step in (2, 3, 4):
                cb.on_step_end(Rank0(), {"step": step})
        return True

    with relay:
        assert ray_session.get(worker.remote(relay.callbacks))
    assert seen and seen[-1] == (1.0, "critic training [4/4 steps]")
    assert all(parse_count(m)[2:] == (4, "steps") for _, m in seen)
    assert StepRelay(None, total=4).callbacks == []  # no ProgressFn: no actor, no callback
