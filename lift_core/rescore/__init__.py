"""Scheduled rescoring of new generations: discovery, the versioned scores store, trends.

``run_rescore(cfg, ...)`` is the entry point (``lift rescore`` and the ``rescore-generations`` flow).
"""

from lift_core.rescore.critic_ref import CriticRef, latest_trained_adapter, resolve_critic
from lift_core.rescore.run import RescoreReport, run_rescore
from lift_core.rescore.store import STORE_SCHEMA, ScoresStore, StoreBusy

__all__ = [
    "CriticRef",
    "RescoreReport",
    "STORE_SCHEMA",
    "ScoresStore",
    "StoreBusy",
    "latest_trained_adapter",
    "resolve_critic",
    "run_rescore",
]
