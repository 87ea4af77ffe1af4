"""LiFT's questions, verbatim against the real annotations; the prompt and answer formats."""

from __future__ import annotations

import json

import pytest

from lift_core.config import DIMENSIONS, LABELS
from lift_core.critic.prompts import QUESTIONS, build_user_text, format_answer, parse_answer


@pytest.fixture(scope="module")
def annotations(fixtures_dir):
    return json.loads((fixtures_dir / "annotations" / "vidgen-data.json").read_text())


def test_questions_are_lifts_verbatim(annotations):
    assert set(QUESTIONS) == set(DIMENSIONS)
    seen = {d: 0 for d in DIMENSIONS}
    for entry in annotations:
        human = entry["conversations"][0]["value"]
        # LiFT's user turn: "<video>\n {caption} {question}": the question ends the text, verbatim.
        matches = [d for d, q in QUESTIONS.items() if human.endswith(" " + q)]
        assert len(matches) == 1, human[-200:]
        seen[matches[0]] += 1
    assert all(n > 100 for n in seen.values()), seen


def test_user_text_is_caption_then_question(annotations):
    for entry in annotations[:50]:
        human = entry["conversations"][0]["value"]
        dim = next(d for d, q in QUESTIONS.items() if human.endswith(q))
        caption = human[len("<video>\n "): -len(QUESTIONS[dim]) - 1]
        assert build_user_text(caption, dim) == " ".join(human[len("<video>\n "):].split())
    assert build_user_text("  two red   circles ", "motion") == "two red circles " + QUESTIONS["motion"]
    with pytest.raises(ValueError, match="unknown dimension"):
        build_user_text("x", "style")
    with pytest.raises(ValueError, match="empty caption"):
        build_user_text("  ", "motion")


def test_parse_answer_reads_the_first_word_of_real_answers(annotations):
    for entry in annotations:
        answer = entry["conversations"][1]["value"]
        label, reason = parse_answer(answer)
        first = answer.split(".", 1)[0].strip()
        assert label == first and label in LABELS
        assert format_answer(label, reason) == " ".join(answer.split())


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Good. Nothing bad or abnormal happens.", ("Good", "Nothing bad or abnormal happens.")),  # LiFT says Bad
        ("Good. The Normal motion of a dog.", ("Good", "The Normal motion of a dog.")),  # LiFT says Normal
        ("Bad: the hands are deformed", ("Bad", "the hands are deformed")),
        ("  normal, some jitter", ("Normal", "some jitter")),
        ("Good", ("Good", "")),
        ("Goodness. x", (None, "Goodness. x")),
        ("The video is Bad.", (None, "The video is Bad.")),
        ("", (None, "")),
    ],
)
def test_parse_answer_label_is_the_first_word(text, expected):
    assert parse_answer(text) == expected


def test_format_answer():
    assert format_answer("Normal", "The objects  jitter.") == "Normal. The objects jitter."
    assert format_answer("Good", None) == "Good."
    with pytest.raises(ValueError, match="unknown label"):
        format_answer("Great", "x")
