"""Progress reporting without Prefect: stages call ``progress(fraction, message)``.

The task layer passes a callback that updates a Prefect progress artifact; the CLI passes one that
draws on the terminal. ``lift_core`` never knows which.

Counts: a stage working through N things reports them with ``count(progress, done, total, unit)``.
The message then ends in ``[done/total unit]``: every ProgressFn shows it as text (a Prefect artifact,
a log line, a fraction rescaled by a caller's lambda all keep it), and ``TerminalProgress`` reads it
back (``parse_count``) to draw the count, the rate and the time left.

``TerminalProgress`` is the one renderer: a bar (tqdm) where its stream is a terminal, plain log
lines (at most one per ``interval_s``, plus the first and the last) where it is not: a log file,
a pipe, a Prefect worker's output or a Ray worker, whose output is never a terminal.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import threading
import time
from datetime import timedelta
from typing import Any, Callable, Optional, TextIO

ProgressFn = Callable[[float, str], None]

log = logging.getLogger("lift")

_COUNT = re.compile(r"^(?P<note>.*?)\s*\[(?P<done>\d+)/(?P<total>\d+) (?P<unit>[^\]]+)\]$", re.S)


def noop_progress(fraction: float, message: str) -> None:  # noqa: ARG001 - the callback signature
    return None


def resolve(progress: Optional[ProgressFn]) -> ProgressFn:
    return progress or noop_progress


def counted(note: str, done: int, total: int, unit: str) -> str:
    """A progress message that carries a count: ``"<note> [done/total unit]"``."""
    return f"{note} [{int(done)}/{int(total)} {unit}]".lstrip()


def parse_count(message: str) -> tuple[str, int, int, str] | None:
    """``(note, done, total, unit)`` of a ``counted`` message, None for a plain one."""
    m = _COUNT.match(message or "")
    return (m["note"], int(m["done"]), int(m["total"]), m["unit"]) if m else None


def count(progress: ProgressFn, done: int, total: int, unit: str, note: str = "") -> None:
    """Report ``done`` of ``total`` ``unit`` (fraction ``done / total``)."""
    progress(min(done / total, 1.0) if total else 1.0, counted(note, done, total, unit))


def tee(*fns: ProgressFn) -> ProgressFn:
    """One ProgressFn that reports to each of ``fns``."""
    def report(fraction: float, message: str) -> None:
        for fn in fns:
            fn(fraction, message)

    return report


def _duration(seconds: float | None) -> str:
    return "?" if seconds is None else str(timedelta(seconds=int(round(seconds))))


def meter_line(label: str, done: int, total: int, unit: str, elapsed: float, initial: int = 0,
               note: str = "") -> str:
    """``label: done/total unit (pct%), rate unit/s, ETA h:mm:ss[, note]``: the no-terminal line.

    The rate counts what was done since the meter started (``initial`` were done before: a resume)."""
    rate = (done - initial) / elapsed if elapsed > 0 and done > initial else None
    eta = (total - done) / rate if rate else (0.0 if done >= total else None)
    pct = 100.0 * done / total if total else 100.0
    rate_s = f"{rate:.3g} {unit}/s" if rate else f"? {unit}/s"
    return f"{label}: {done}/{total} {unit} ({pct:.0f}%), {rate_s}, ETA {_duration(eta)}" + (f", {note}" if note else "")


class TerminalProgress:
    """A ProgressFn that draws bars on a terminal and logs plain lines elsewhere.

    Counted messages (``count``) drive a bar per (total, unit): a new total or unit, or a count that
    goes back, starts a new one. Plain messages are printed as notes above the bar (on a terminal) or
    logged. Whether ``stream`` (stderr by default) is a terminal is asked once, of the stream itself.
    ``for_stage(label)`` gives a fresh one with the same settings for one stage. Thread-safe: a
    training driver reports from a relay thread.
    """

    def __init__(self, label: str = "lift", stream: TextIO | None = None, tty: bool | None = None,
                 interval_s: float = 10.0, emit: Callable[[str], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.interval_s = interval_s
        self.emit = emit or log.info
        self.clock = clock
        self._lock = threading.Lock()
        self._bar: Any = None  # tqdm, on a terminal
        self._meter: dict[str, Any] | None = None  # total, unit, initial, done, started, logged

    def for_stage(self, label: str) -> "TerminalProgress":
        return TerminalProgress(label, self.stream, self.tty, self.interval_s, self.emit, self.clock)

    def __call__(self, fraction: float, message: str) -> None:  # noqa: ARG002 - counts carry the fraction
        parsed = parse_count(message)
        with self._lock:
            if parsed is None:
                self._note(message)
                return
            note, done, total, unit = parsed
            m = self._meter
            if m is None or (m["total"], m["unit"]) != (total, unit) or done < m["done"]:
                self._finish()
                m = self._meter = {"total": total, "unit": unit, "initial": done, "done": done,
                                   "started": self.clock(), "logged": None}
                if self.tty:
                    # The size is asked once; a terminal that reports none (a bare pty: 0x0, where tqdm would
                    # hide every bar) counts as 100x20.
                    cols, rows = shutil.get_terminal_size((100, 20))
                    self._bar = _tqdm()(total=total, initial=done, unit=f" {unit}", desc=self.label, file=self.stream,
                                        ncols=cols, nrows=rows, leave=True, smoothing=0.1)
            m["done"] = done
            if self._bar is not None:
                self._bar.set_postfix_str(note, refresh=False)
                self._bar.update(done - self._bar.n)
            else:
                now = self.clock()
                if m["logged"] is None or done >= total or now - m["logged"] >= self.interval_s:
                    m["logged"] = now
                    self.emit(meter_line(self.label, done, total, unit, now - m["started"], m["initial"], note))
            if done >= total:
                self._finish()

    def write(self, line: str) -> None:
        """A line of text that keeps the bars intact (above them on a terminal, logged elsewhere)."""
        with self._lock:
            self._note(line, prefix=False)

    def close(self) -> None:
        with self._lock:
            self._finish()

    def _note(self, message: str, prefix: bool = True) -> None:
        line = f"{self.label}: {message}" if prefix else message
        if self.tty:
            _tqdm().write(line, file=self.stream)
        else:
            self.emit(line)

    def _finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._meter = None, None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _tqdm():
    from tqdm import tqdm

    return tqdm


# The CLI's progress (``lift critic train``, ``lift t2v ...``): a bar per stage on a terminal, log lines
# otherwise. ``InlineStages`` gives each stage its own (``for_stage``).
log_progress = TerminalProgress()
