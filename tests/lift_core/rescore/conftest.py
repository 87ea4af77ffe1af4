"""Fixtures of the rescoring tests (defined in rescore_fixtures.py, shared with tests/flows)."""

from rescore_fixtures import (  # noqa: F401 - fixtures are found by name
    critic_a,
    critic_b,
    critic_base,
    rescore_cfg,
    synth_videos,
    write_generations,
    write_real_fixtures,
)
