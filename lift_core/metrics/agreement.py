"""Agreement of a critic with human labels, per dimension, next to a majority-class baseline.

For each dimension on the held-out split:

- ``accuracy``, ``macro_f1`` and ``confusion`` (rows: human label, columns: critic label, in
  ``LABELS`` order) of the critic's argmax label;
- ``spearman``: rank correlation between the critic's expected reward ``sum_l p(l) * value(l)``
  and the value of the human label (``critic.label_values``);
- ``majority_accuracy`` / ``majority_macro_f1``: the same for always answering the most frequent
  label of the TRAINING split (a baseline that learned only the label prior). Its Spearman is
  undefined (a constant prediction), reported as None.

Macro-F1 averages over the labels that occur in the human labels or in the predictions (as
scikit-learn does without an explicit label list); a label's F1 is 0 when it is never predicted
correctly.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from lift_core.config import DIMENSIONS, LABELS


def _check_labels(values: Sequence[str], what: str, labels: Sequence[str]) -> None:
    unknown = sorted({v for v in values if v not in labels}, key=str)
    if unknown:
        raise ValueError(f"{what}: unknown labels {unknown}; expected {list(labels)}")


def confusion_matrix(true: Sequence[str], pred: Sequence[str], labels: Sequence[str] = LABELS) -> list[list[int]]:
    """``m[i][j]`` = number of items with human label ``labels[i]`` and predicted ``labels[j]``."""
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true labels but {len(pred)} predictions")
    _check_labels(true, "true", labels)
    _check_labels(pred, "pred", labels)
    index = {label: i for i, label in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for t, p in zip(true, pred):
        m[index[t]][index[p]] += 1
    return m


def accuracy(true: Sequence[str], pred: Sequence[str]) -> float:
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true labels but {len(pred)} predictions")
    if not true:
        raise ValueError("accuracy of an empty set")
    return sum(t == p for t, p in zip(true, pred)) / len(true)


def macro_f1(true: Sequence[str], pred: Sequence[str], labels: Sequence[str] = LABELS) -> float:
    m = np.array(confusion_matrix(true, pred, labels), dtype=np.float64)
    if m.sum() == 0:
        raise ValueError("macro-F1 of an empty set")
    scores = []
    for i in range(len(labels)):
        tp = m[i, i]
        support, predicted = m[i, :].sum(), m[:, i].sum()
        if support == 0 and predicted == 0:
            continue  # a label that occurs nowhere does not count
        denom = support + predicted
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None when either side is constant or n < 2."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"spearman: shapes {x.shape} and {y.shape} differ")
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    rho = float(spearmanr(x, y).statistic)
    return None if math.isnan(rho) else rho


def expected_reward(probs: np.ndarray, label_values: Mapping[str, float], labels: Sequence[str] = LABELS) -> np.ndarray:
    """``sum_l p(l) * value(l)`` for ``[N, len(labels)]`` probabilities."""
    values = np.array([float(label_values[label]) for label in labels], dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probs must be [N, {len(labels)}], got {probs.shape}")
    return probs @ values


def majority_label(train_labels: Sequence[str], labels: Sequence[str] = LABELS) -> str:
    """The most frequent training label (ties: the first in ``labels`` order)."""
    _check_labels(train_labels, "train", labels)
    if not train_labels:
        raise ValueError("no training labels for the majority baseline")
    counts = Counter(train_labels)
    return max(labels, key=lambda label: (counts.get(label, 0), -labels.index(label)))


def dimension_agreement(
    true: Sequence[str],
    probs: np.ndarray,
    label_values: Mapping[str, float],
    majority: str,
    labels: Sequence[str] = LABELS,
) -> dict[str, Any]:
    """Critic vs human labels on one dimension, with the majority baseline side by side."""
    probs = np.asarray(probs, dtype=np.float64)
    if len(true) != len(probs):
        raise ValueError(f"{len(true)} labels but {len(probs)} probability rows")
    pred = [labels[i] for i in probs.argmax(axis=1)]
    base = [majority] * len(true)
    rewards = expected_reward(probs, label_values, labels)
    human = [float(label_values[t]) for t in true]
    return {
        "n": len(true),
        "accuracy": accuracy(true, pred),
        "macro_f1": macro_f1(true, pred, labels),
        "spearman": spearman(rewards, human),
        "confusion": confusion_matrix(true, pred, labels),
        "majority_label": majority,
        "majority_accuracy": accuracy(true, base),
        "majority_macro_f1": macro_f1(true, base, labels),
        "majority_spearman": None,  # a constant prediction has no rank correlation
        "labels": list(labels),
        "label_counts": {label: int(sum(t == label for t in true)) for label in labels},
    }


def agreement_report(
    true: Mapping[str, Sequence[str]],
    probs: Mapping[str, np.ndarray],
    train_labels: Mapping[str, Sequence[str]],
    label_values: Mapping[str, float],
    n_test: int,
) -> dict[str, Any]:
    """``{dimension: dimension_agreement(...), ..., "n_test": n_test}`` for each dimension present."""
    report: dict[str, Any] = {}
    for dim in DIMENSIONS:
        if dim not in true:
            continue
        if not len(true[dim]):
            raise ValueError(f"no held-out labels for dimension {dim!r}")
        report[dim] = dimension_agreement(true[dim], probs[dim], label_values, majority_label(train_labels[dim]))
    report["n_test"] = int(n_test)
    return report


def agreement_table(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per dimension (critic next to the baseline), for a table artifact or a report."""
    rows = []
    for dim in DIMENSIONS:
        m = report.get(dim)
        if not isinstance(m, Mapping):
            continue
        rows.append({
            "dimension": dim,
            "n": m["n"],
            "accuracy": round(m["accuracy"], 4),
            "majority_accuracy": round(m["majority_accuracy"], 4),
            "accuracy_gain": round(m["accuracy"] - m["majority_accuracy"], 4),
            "macro_f1": round(m["macro_f1"], 4),
            "majority_macro_f1": round(m["majority_macro_f1"], 4),
            "spearman": None if m["spearman"] is None else round(m["spearman"], 4),
            "confusion (rows human G/N/B, cols critic)": str(m["confusion"]),
        })
    return rows


def agreement_from_predictions(preds: Sequence[Mapping[str, Any]], split: str,
                               train_labels: Mapping[str, Sequence[str]],
                               label_values: Mapping[str, float]) -> dict[str, Any]:
    """``agreement_report`` of the prediction rows of one split (rows of ``video_id``, ``split``,
    ``dimension``, ``label`` and ``p_good``/``p_normal``/``p_bad``, as critic training writes them)."""
    rows = [p for p in preds if p["split"] == split]
    true = {d: [p["label"] for p in rows if p["dimension"] == d] for d in DIMENSIONS}
    probs = {d: np.array([[p["p_good"], p["p_normal"], p["p_bad"]] for p in rows if p["dimension"] == d]).reshape(-1, 3)
             for d in DIMENSIONS}
    return agreement_report({d: v for d, v in true.items() if v}, probs, train_labels, label_values,
                            n_test=len({p["video_id"] for p in rows}))
