"""The critic's prompts and answers, as LiFT writes them.

- The user turn is the video, then ``"<caption> <question>"``: LiFT-HRA puts the caption first and
  the dimension's question after it (``"<video>\\n {caption} {question}"`` in the annotation files).
- The answer is ``"Label. reason"``. The label is the FIRST word. (LiFT's own parser searches the
  whole text for the substrings "Normal" or "Bad" and calls everything else Good, so a reason such
  as "Good. Nothing bad happens" comes out Bad there; we do not copy that.)
"""

from __future__ import annotations

import re

from data_catalog.lift_questions import QUESTIONS
from lift_core.config import DIMENSIONS, LABELS

__all__ = ["QUESTIONS", "build_user_text", "format_answer", "parse_answer", "question_for"]

# The first word, and whatever separates it from the reason ("Good. x", "Bad: x", "Normal, x", "Good").
_ANSWER_RE = re.compile(r"^\s*([A-Za-z]+)\s*[.:,;!-]?\s*(.*)$", re.DOTALL)


def question_for(dimension: str) -> str:
    try:
        return QUESTIONS[dimension]
    except KeyError:
        raise ValueError(f"unknown dimension {dimension!r}; expected one of {list(DIMENSIONS)}") from None


def build_user_text(caption: str, dimension: str) -> str:
    """The text of the user turn: the caption first, then the dimension's question."""
    caption = " ".join(str(caption).split())
    if not caption:
        raise ValueError("empty caption")
    return f"{caption} {question_for(dimension)}"


def format_answer(label: str, reason: str | None) -> str:
    """``"Label. reason"`` (just ``"Label."`` when there is no reason)."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {list(LABELS)}")
    reason = " ".join(str(reason or "").split())
    return f"{label}. {reason}" if reason else f"{label}."


def parse_answer(text: str) -> tuple[str | None, str]:
    """``(label, reason)`` of an answer. ``label`` is the first word when it is one of ``LABELS``
    (case-insensitive), else None and the reason is the whole stripped text."""
    m = _ANSWER_RE.match(text or "")
    if m is None:
        return None, (text or "").strip()
    word = m.group(1).capitalize()
    if word not in LABELS:
        return None, (text or "").strip()
    return word, m.group(2).strip()
