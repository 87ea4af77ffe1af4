"""Progress reporting without Prefect: stages call ``progress(fraction, message)``.

The task layer passes a callback that updates a Prefect progress artifact; the CLI passes one that
logs. ``lift_core`` never knows which.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

ProgressFn = Callable[[float, str], None]

log = logging.getLogger("lift")


def noop_progress(fraction: float, message: str) -> None:  # noqa: ARG001 - the callback signature
    return None


def log_progress(fraction: float, message: str) -> None:
    log.info("[%5.1f%%] %s", 100.0 * fraction, message)


def resolve(progress: Optional[ProgressFn]) -> ProgressFn:
    return progress or noop_progress
