"""Fixtures of the benchmark smoke tests."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def benchmark_module(monkeypatch) -> Callable[[str], ModuleType]:
    """``benchmark_module(name)``: ``benchmarks/<name>.py``, imported by name from its folder for this test.

    By name, as ``python benchmarks/<name>.py`` runs it: its own imports (``_common``) and the bare
    processes it spawns (multiprocessing) find the folder too.
    """
    def load(name: str) -> ModuleType:
        monkeypatch.syspath_prepend(str(BENCHMARKS))
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve() == BENCHMARKS / f"{name}.py", module.__file__
        return module

    return load
