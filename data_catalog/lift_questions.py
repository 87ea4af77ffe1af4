"""LiFT's three critic questions, verbatim from the LiFT-HRA annotation files.

tests/data_catalog/test_questions.py checks them against the real annotations fixture.
"""

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

# The keys of LiFT's critic_output_*.json for each dimension.
CRITIC_OUTPUT_KEYS: dict[str, str] = {
    "semantic": "semantic consistency",
    "fidelity": "fidelity issues",
    "motion": "motion issues",
}


def dimension_of_question(text: str) -> str | None:
    """The dimension whose question ends ``text`` (LiFT puts the caption first, then the question)."""
    for dim, question in QUESTIONS.items():
        if question in text:
            return dim
    # Tolerate rewrapped whitespace in hand-made files.
    flat = " ".join(text.split())
    for dim, question in QUESTIONS.items():
        if " ".join(question.split()) in flat:
            return dim
    return None
