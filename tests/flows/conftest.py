"""Fixtures of the flow and CLI tests.

The rescoring flow and the S3 test use the rescoring tests' generated videos and tiny critics: the
fixtures of ``tests/lift_core/rescore/rescore_fixtures.py``, registered here for this folder, as is
the tiny VILA checkpoint of ``tests/lift_core/critic/vila_fixtures.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _fixtures(folder: str, name: str):
    """A fixtures module, loaded once under its own name (its folder's conftest.py imports it too)."""
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "lift_core" / folder / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_rescore = _fixtures("rescore", "rescore_fixtures")
critic_base = _rescore.critic_base
critic_a = _rescore.critic_a
synth_videos = _rescore.synth_videos
write_generations = _rescore.write_generations
tiny_vila = _fixtures("critic", "vila_fixtures").tiny_vila
