"""Shared test fixtures: the real LiFT fixtures, one Ray instance per session, offline hubs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing is downloaded in tests: every model is built locally and loaded from disk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray instance for the whole session (as CI's 2-core machine allows)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, object_store_memory=int(5e8), include_dashboard=False, log_to_driver=False)
    yield ray
