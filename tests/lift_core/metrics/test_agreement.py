"""Agreement figures on a hand-made case whose values are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lift_core.metrics.agreement import (
    accuracy,
    agreement_report,
    agreement_table,
    confusion_matrix,
    dimension_agreement,
    expected_reward,
    macro_f1,
    majority_label,
    spearman,
)

VALUES = {"Good": 1.0, "Normal": 0.5, "Bad": 0.0}
G, N, B = [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]

# Human labels and the critic's probabilities for 8 items:
# true G G G N N B B B ; pred G G N N B B B G
TRUE = ["Good", "Good", "Good", "Normal", "Normal", "Bad", "Bad", "Bad"]
PROBS = np.array([G, G, N, N, B, B, B, G])


def test_confusion_accuracy_f1_by_hand():
    pred = ["Good", "Good", "Normal", "Normal", "Bad", "Bad", "Bad", "Good"]
    assert confusion_matrix(TRUE, pred) == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert accuracy(TRUE, pred) == pytest.approx(5 / 8)
    # F1: Good 2*2/(3+3)=2/3; Normal 2*1/(2+2)=1/2; Bad 2*2/(3+3)=2/3
    assert macro_f1(TRUE, pred) == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


def test_dimension_agreement_by_hand():
    m = dimension_agreement(TRUE, PROBS, VALUES, majority="Bad")
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert m["majority_accuracy"] == pytest.approx(3 / 8)
    # Always "Bad": F1 of Bad = 2*3/(3+8) = 6/11; Good and Normal occur in the truth, F1 0.
    assert m["majority_macro_f1"] == pytest.approx((6 / 11) / 3)
    # Expected rewards: G-like 0.85, N-like 0.5, B-like 0.15.
    rewards = expected_reward(PROBS, VALUES)
    np.testing.assert_allclose(rewards, [0.85, 0.85, 0.5, 0.5, 0.15, 0.15, 0.15, 0.85])
    # Spearman by hand: average ranks of the rewards and of the human values, then Pearson.
    def ranks(x):
        x = np.asarray(x)
        r = np.empty(len(x))
        for v in np.unique(x):
            idx = np.where(x == v)[0]
            r[idx] = np.mean(np.argsort(np.argsort(x, kind="stable"), kind="stable")[idx]) + 1
        return r
    human = [VALUES[t] for t in TRUE]
    expected = np.corrcoef(ranks(rewards), ranks(human))[0, 1]
    assert m["spearman"] == pytest.approx(expected)
    assert 0 < m["spearman"] < 1
    assert m["majority_spearman"] is None
    assert m["label_counts"] == {"Good": 3, "Normal": 2, "Bad": 3}


def test_perfect_and_constant_cases():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert majority_label(["Bad", "Good", "Good", "Bad"]) == "Good"  # tie: LABELS order
    assert majority_label(["Normal", "Bad", "Normal"]) == "Normal"


def test_report_shape_and_table():
    report = agreement_report({"semantic": TRUE, "motion": TRUE[:4]}, {"semantic": PROBS, "motion": PROBS[:4]},
                              {"semantic": ["Bad"] * 3 + ["Good"], "motion": ["Good"]}, VALUES, n_test=8)
    assert set(report) == {"semantic", "motion", "n_test"}
    assert report["n_test"] == 8
    assert report["semantic"]["majority_label"] == "Bad"
    assert report["motion"]["accuracy"] == pytest.approx(3 / 4)
    assert report["motion"]["majority_accuracy"] == pytest.approx(3 / 4)
    rows = agreement_table(report)
    assert [r["dimension"] for r in rows] == ["semantic", "motion"]
    assert rows[0]["accuracy_gain"] == pytest.approx(5 / 8 - 3 / 8, abs=1e-4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown labels"):
        confusion_matrix(["Good", "Great"], ["Good", "Good"])
    with pytest.raises(ValueError, match="true labels but"):
        accuracy(["Good"], [])
    with pytest.raises(ValueError, match=r"probs must be \[N, 3\]"):
        expected_reward(np.zeros((2, 2)), VALUES)
