"""Hooks into the training loop: progress reporting, profiling, and fault injection in tests.

Callbacks travel to the Ray Train workers inside the loop's config, so they must pickle; every
method is optional. They run on every rank; check ``ctx.rank`` for rank-0-only work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lift_core.train.loop import WorkerContext


class Callback:
    def on_train_start(self, ctx: "WorkerContext", start_step: int) -> None:
        """After the model is built and any checkpoint restored; ``start_step`` steps are already done."""

    def on_step_start(self, ctx: "WorkerContext", step: int) -> None:
        """Before optimizer step ``step`` (1-based: the step that is about to run)."""

    def on_step_end(self, ctx: "WorkerContext", row: dict[str, Any]) -> None:
        """After a step, with its train-log row (global figures, the same on every rank)."""

    def on_checkpoint(self, ctx: "WorkerContext", step: int, uri: str | None) -> None:
        """After checkpoint ``step`` is written (``uri`` on rank 0, None elsewhere)."""

    def on_train_end(self, ctx: "WorkerContext") -> None:
        """After the last step and the recipe's outputs."""
