"""The domain constants against LiFT's real files, and the one answer grammar both call sites use."""

from __future__ import annotations

import json

import pytest

from lift_core import config, domain
from lift_core.domain import (
    CRITIC_OUTPUT_KEYS,
    DIMENSIONS,
    LABELS,
    QUESTIONS,
    dimension_of_question,
    format_answer,
    parse_answer,
    parse_label_answer,
)


@pytest.fixture(scope="module")
def annotations(fixtures_dir):
    return json.loads((fixtures_dir / "annotations" / "vidgen-data.json").read_text())


def test_config_names_the_same_constants():
    assert config.DIMENSIONS is domain.DIMENSIONS and config.LABELS is domain.LABELS
    assert set(QUESTIONS) == set(CRITIC_OUTPUT_KEYS) == set(DIMENSIONS)


def test_every_real_annotation_ends_with_one_question(annotations):
    seen = {d: 0 for d in DIMENSIONS}
    for entry in annotations:
        human = entry["conversations"][0]["value"]
        dim = dimension_of_question(human)
        assert dim is not None and human.endswith(" " + QUESTIONS[dim]), human[-200:]
        seen[dim] += 1
    assert seen == {"semantic": 352, "fidelity": 315, "motion": 333}
    rewrapped = "<video>\n a cat " + QUESTIONS["motion"].replace(" ", "\n  ")
    assert dimension_of_question(rewrapped) == "motion"
    assert dimension_of_question("<video>\n what is this?") is None


def test_critic_output_keys_are_lifts(fixtures_dir):
    for name in ("critic_output_13b.json", "critic_output_40b.json"):
        for entry in json.loads((fixtures_dir / "lift-demo" / name).read_text()):
            assert set(CRITIC_OUTPUT_KEYS.values()) <= set(entry)


def test_real_answers_parse_and_format_back(annotations, fixtures_dir):
    for entry in annotations:
        answer = entry["conversations"][1]["value"]
        label, reason = parse_answer(answer)
        assert label == "Good" and reason and not reason.startswith(".")
        assert format_answer(label, reason) == " ".join(answer.split())
    outputs = {
        name: [
            tuple(parse_answer(e[CRITIC_OUTPUT_KEYS[d]])[0] for d in DIMENSIONS)
            for e in json.loads((fixtures_dir / "lift-demo" / name).read_text())
        ]
        for name in ("critic_output_13b.json", "critic_output_40b.json")
    }
    # (semantic, fidelity, motion) of the two demo videos, as the published critics answered.
    assert outputs == {
        "critic_output_13b.json": [("Good", "Bad", "Good"), ("Bad", "Bad", "Normal")],
        "critic_output_40b.json": [("Good", "Good", "Good"), ("Bad", "Bad", "Normal")],
    }
    assert parse_answer("Good. Basically correct.") == ("Good", "Basically correct.")


@pytest.mark.parametrize(
    "text,expected",
    [
        # LiFT's substring search would call these Bad and Normal: the label is the first word.
        ("Good. Nothing bad or abnormal happens.", ("Good", "Nothing bad or abnormal happens.")),
        ("Good. The Normal motion of a dog.", ("Good", "The Normal motion of a dog.")),
        ("Normal. The panda's movements are not smooth.", ("Normal", "The panda's movements are not smooth.")),
        ("Bad: the hands are deformed", ("Bad", "the hands are deformed")),
        ("  normal, some jitter", ("Normal", "some jitter")),
        ("BAD. x", ("Bad", "x")),
        ("Bad - the hands", ("Bad", "the hands")),
        ("Bad \u2014 the hands", ("Bad", "the hands")),
        ("Good.No space", ("Good", "No space")),
        ("Good work on the hands.", ("Good", "work on the hands.")),
        ("Good", ("Good", "")),
        ("Good.", ("Good", "")),
        ("Goodness. x", (None, "Goodness. x")),
        ("Bad-looking hands.", (None, "Bad-looking hands.")),
        ("Good2 x", (None, "Good2 x")),
        ("The video is Bad.", (None, "The video is Bad.")),
        ("  ", (None, "")),
        ("", (None, "")),
        (None, (None, "")),
    ],
)
def test_label_is_the_first_word(text, expected):
    assert parse_answer(text) == expected


def test_rated_answers_need_a_label():
    assert parse_label_answer("Normal. Slight jitter.") == ("Normal", "Slight jitter.")
    with pytest.raises(ValueError, match=r"unknown label 'Excellent\.' \(expected one of Good, Normal, Bad\)"):
        parse_label_answer("Excellent. Fine.")
    with pytest.raises(ValueError, match="unknown label 'The'"):
        parse_label_answer("The motion is Bad.")
    with pytest.raises(ValueError, match="unknown label ''"):
        parse_label_answer("   ")


def test_format_answer():
    assert format_answer("Normal", "The objects  jitter.") == "Normal. The objects jitter."
    assert format_answer("Good", None) == "Good."
    assert all(parse_answer(format_answer(label, "a reason")) == (label, "a reason") for label in LABELS)
    with pytest.raises(ValueError, match="unknown label"):
        format_answer("Great", "x")
