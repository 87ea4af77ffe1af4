"""The critic's prompts, as LiFT writes them.

The user turn is the video, then ``"<caption> <question>"``: LiFT-HRA puts the caption first and the
dimension's question after it (``"<video>\\n {caption} {question}"`` in the annotation files).
The questions and the answer grammar (``"Label. reason"``) are domain constants in ``lift_core.domain``.
"""

from __future__ import annotations

from lift_core.domain import DIMENSIONS, QUESTIONS, format_answer, parse_answer

__all__ = ["QUESTIONS", "build_user_text", "format_answer", "parse_answer", "question_for"]


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
