"""Table artifacts show floats to 4 significant digits; the stage outputs keep full precision."""

from __future__ import annotations

import math

import prefect.artifacts

from lift_core.stages import Artifact
from tasks.common import rounded
from tasks.stage_task import publish


def test_floats_are_rounded_to_four_significant_digits_and_nothing_else_changes():
    assert rounded(0.6105263157894737) == 0.6105
    assert rounded(123456.789) == 123500.0 and rounded(-0.000123456) == -0.0001235
    assert rounded(7) == 7 and rounded(True) is True and rounded("0.6105263157894737") == "0.6105263157894737"
    assert rounded(None) is None and math.isnan(rounded(float("nan")))
    assert rounded({"a": [0.123456, {"b": 2.0 / 3}]}) == {"a": [0.1235, {"b": 0.6667}]}


def test_a_stage_table_is_published_rounded(monkeypatch):
    published = []
    monkeypatch.setattr(prefect.artifacts, "create_table_artifact", lambda **kw: published.append(kw))
    rows = [{"dimension": "semantic", "accuracy": 0.6105263157894737, "n": 95}]
    publish([Artifact("metrics", "critic agreement", table=rows)], "train-critic")
    (art,) = published
    assert art["table"] == [{"dimension": "semantic", "accuracy": 0.6105, "n": 95}]
    assert art["key"] == "train-critic-metrics" and rows[0]["accuracy"] == 0.6105263157894737  # input untouched
