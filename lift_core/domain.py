"""LiFT's domain constants and its answer grammar: what every layer agrees on.

- The three rated dimensions and the three labels.
- LiFT's three critic questions, verbatim from the LiFT-HRA annotation files (tests check them
  against the real annotations fixture).
- The keys of LiFT's ``critic_output_*.json`` per dimension.
- Answers: ``"Label. reason"``. The label is the FIRST word. LiFT's own parser searches the whole
  text for the substrings "Normal" or "Bad" and calls everything else Good, so "Good. Nothing bad
  happens" comes out Bad there; we do not copy that.

This module imports nothing from the project, so ``config``, the critic and ``data_catalog`` can
all depend on it.
"""

from __future__ import annotations

import re

DIMENSIONS: tuple[str, ...] = ("semantic", "fidelity", "motion")
LABELS: tuple[str, ...] = ("Good", "Normal", "Bad")

QUESTIONS: dict[str, str] = {
    "semantic": (
        "Please identify the semantic consistency issues in this video, focusing on the alignment between "
        "the text and the visual content. Specifically, point out any discrepancies regarding the subject "
        "(e.g., person or animal), quantity, color, scene description, style, and other relevant aspects."
    ),
    "motion": (
        "Please identify the motion issues in this video, focusing on the continuity and smoothness of "
        "actions, as well as their coherence and adherence to the laws of physics."
    ),
    "fidelity": (
        "Please identify the fidelity issues in this video, assessing the realism of the content, including "
        "people, animals, and other objects. Highlight any problems such as missing limbs, deformed hands or "
        "faces, or other unrealistic elements."
    ),
}

CRITIC_OUTPUT_KEYS: dict[str, str] = {
    "semantic": "semantic consistency",
    "fidelity": "fidelity issues",
    "motion": "motion issues",
}

# The first word, then one optional separator before the reason ("Good. x", "Bad: x", "Normal, x",
# "Bad - x", "Good"). The word ends at whitespace, a separator or the end, so "Goodness" and
# "Bad-looking" are words of their own, not labels.
_SEPARATORS = ".,:;!\u2013\u2014"
_ANSWER_RE = re.compile(
    rf"\s*([A-Za-z]+)(?=$|[\s{_SEPARATORS}])\s*(?:[{_SEPARATORS}]|-(?=\s))?\s*(.*)", re.DOTALL
)


def dimension_of_question(text: str) -> str | None:
    """The dimension whose question is in ``text`` (LiFT puts the caption first, then the question)."""
    for dim, question in QUESTIONS.items():
        if question in text:
            return dim
    # Tolerate rewrapped whitespace in hand-made files.
    flat = " ".join(text.split())
    for dim, question in QUESTIONS.items():
        if " ".join(question.split()) in flat:
            return dim
    return None


def parse_answer(text: str | None) -> tuple[str | None, str]:
    """``(label, reason)`` of a ``"Label. reason"`` answer.

    ``label`` is the first word when it is one of ``LABELS`` (any case, returned capitalised); else
    ``None``, and the reason is the whole stripped text.
    """
    stripped = (text or "").strip()
    m = _ANSWER_RE.fullmatch(stripped)
    if m is None or m.group(1).capitalize() not in LABELS:
        return None, stripped
    return m.group(1).capitalize(), m.group(2).strip()


def parse_label_answer(text: str) -> tuple[str, str]:
    """``parse_answer`` for rated data, where an answer without a label is an error (ValueError)."""
    label, reason = parse_answer(text)
    if label is None:
        first = text.split(None, 1)[0] if text and text.strip() else ""
        raise ValueError(f"unknown label {first!r} (expected one of {', '.join(LABELS)})")
    return label, reason


def format_answer(label: str, reason: str | None) -> str:
    """``"Label. reason"`` (just ``"Label."`` when there is no reason); ``parse_answer`` reads it back."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {list(LABELS)}")
    reason = " ".join(str(reason or "").split())
    return f"{label}. {reason}" if reason else f"{label}."
