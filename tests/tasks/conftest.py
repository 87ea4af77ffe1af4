"""A temporary Prefect server (Prefect's test harness, SQLite) shared by the task tests of this folder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prefect_api():
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()
