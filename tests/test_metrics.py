"""Metrics against a case computed by hand, their printed table, and metrics.json.

The case: 10 samples of 3 classes,
    y_true = 0 0 0 0 1 1 1 2 2 2
    y_pred = 0 0 0 1 1 1 1 2 2 0
so the confusion matrix (rows true, columns predicted) is
    [[3, 1, 0],
     [0, 3, 0],
     [1, 0, 2]]
Precision and recall differ per class, so swapping y_true and y_pred would show.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

from mobilenet_lab.metrics import compute_metrics, format_metrics  # noqa: E402
from mobilenet_lab.tools.insight import roc_curves  # noqa: E402
from mobilenet_lab.evaluation import evaluate  # noqa: E402

NAMES = ["0", "1", "2"]
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 1, 1, 2, 2, 0]
# Softmax-like probabilities whose argmax is Y_PRED. Sample 9 (true 2, predicted 0) still
# ranks above every negative in column 2, so class 2's AUC is 1 from probabilities, while
# from hard labels it would be (recall 2/3 + specificity 1) / 2 = 0.833.
PROBS = [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.6, 0.2, 0.2], [0.4, 0.5, 0.1], [0.2, 0.7, 0.1],
         [0.1, 0.7, 0.2], [0.3, 0.6, 0.1], [0.1, 0.2, 0.7], [0.2, 0.2, 0.6], [0.5, 0.2, 0.3]]

# By hand from the confusion matrix above.
CONFUSION = [[3, 1, 0], [0, 3, 0], [1, 0, 2]]
PRECISION = [3 / 4, 3 / 4, 2 / 2]               # diagonal / column sums (4, 4, 2)
RECALL = [3 / 4, 3 / 3, 2 / 3]                  # diagonal / row sums (4, 3, 3)
F1 = [3 / 4, 6 / 7, 4 / 5]                      # 2PR / (P + R)
SPECIFICITY = [5 / 6, 6 / 7, 7 / 7]             # TN / (TN + FP): TN 5, 6, 7; FP 1, 1, 0
F1_MACRO = (3 / 4 + 6 / 7 + 4 / 5) / 3          # 337/420
F1_WEIGHTED = (4 * 3 / 4 + 3 * 6 / 7 + 3 * 4 / 5) / 10  # support 4, 3, 3: 279/350
# Multiclass MCC: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)), with c = 8
# correct, s = 10 samples, predicted counts p = (4, 4, 2), true counts t = (4, 3, 3).
MCC = (8 * 10 - (4 * 4 + 4 * 3 + 2 * 3)) / math.sqrt((100 - 36) * (100 - 34))  # 46 / sqrt(4224)
# One-vs-rest AUC = share of (positive, negative) pairs ranked right. Class 0: positives score
# 0.8, 0.7, 0.6, 0.4; negatives 0.2, 0.1, 0.3, 0.1, 0.2, 0.5: 0.4 < 0.5 is the one miss of 24.
AUC = {"0": 23 / 24, "1": 1.0, "2": 1.0}


def pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUC counted over all (positive, negative) pairs, ties half: independent of scikit-learn."""
    pos, neg = scores[positive], scores[~positive]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
                 / (len(pos) * len(neg)))


@pytest.fixture(scope="module")
def hand_case() -> dict:
    return compute_metrics(torch.tensor(Y_TRUE), torch.tensor(Y_PRED), torch.tensor(PROBS), NAMES)


def test_headline_figures_match_the_hand_computed_case(hand_case):
    m = hand_case
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx(np.mean(RECALL))
    assert m["precision_macro"] == pytest.approx(np.mean(PRECISION))
    assert m["recall_macro"] == pytest.approx(np.mean(RECALL))
    assert m["specificity_macro"] == pytest.approx(np.mean(SPECIFICITY))
    assert m["f1_macro"] == pytest.approx(F1_MACRO)
    assert m["f1_weighted"] == pytest.approx(F1_WEIGHTED)
    assert m["mcc"] == pytest.approx(MCC)
    assert m["confusion_matrix"] == CONFUSION


def test_per_class_figures_match_the_hand_computed_case(hand_case):
    for i, name in enumerate(NAMES):
        row = hand_case["per_class"][name]
        assert row["precision"] == pytest.approx(PRECISION[i])
        assert row["recall"] == pytest.approx(RECALL[i])
        assert row["f1"] == pytest.approx(F1[i])
        assert row["specificity"] == pytest.approx(SPECIFICITY[i])
        assert row["support"] == Y_TRUE.count(i)


def test_y_true_comes_first():
    swapped = compute_metrics(Y_PRED, Y_TRUE, None, NAMES)
    assert swapped["per_class"]["2"]["precision"] == pytest.approx(RECALL[2])  # 2/3, not 1
    assert swapped["confusion_matrix"] == np.array(CONFUSION).T.tolist()


def test_roc_auc_comes_from_probabilities_not_hard_labels(hand_case):
    assert hand_case["roc_auc_per_class"] == pytest.approx(AUC)
    assert hand_case["roc_auc_macro"] == pytest.approx(np.mean(list(AUC.values())))
    y, p = np.array(Y_TRUE), np.array(PROBS)
    for i, name in enumerate(NAMES):
        assert hand_case["roc_auc_per_class"][name] == pytest.approx(pairwise_auc(p[:, i], y == i))


def test_roc_curves_agree_with_the_aucs_and_skip_absent_classes(hand_case):
    curves = roc_curves(Y_TRUE, PROBS, NAMES)
    assert list(curves) == NAMES
    for name, (fpr, tpr, auc) in curves.items():
        assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
        assert auc == pytest.approx(hand_case["roc_auc_per_class"][name])
    four = roc_curves(Y_TRUE, np.hstack([PROBS, np.zeros((10, 1))]), NAMES + ["3"])
    assert "3" not in four  # no test sample of class 3: no curve, no AUC


# The case has a class absent from y_true on purpose; scikit-learn's balanced accuracy warns of it.
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true:UserWarning")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_figure_agrees_with_scikit_learn(seed):
    """Every figure is scikit-learn's, called the way its documentation means. The case is random and imbalanced, with tied probabilities (rounded to 0.1), a class never
    predicted and a class absent from y_true (no AUC for it)."""
    from sklearn import metrics as skm

    rng = np.random.default_rng(seed)
    k, n = 5, 400
    y_true = rng.choice([0, 1, 2, 3], size=n, p=[0.55, 0.25, 0.15, 0.05])  # class 4 absent
    y_pred = np.where(rng.random(n) < 0.7, y_true, rng.choice([0, 1, 3, 4], size=n))  # 2 only if true
    probs = np.round(rng.dirichlet(np.ones(k), size=n), 1)
    m = compute_metrics(torch.tensor(y_true), torch.tensor(y_pred), torch.tensor(probs), [str(i) for i in range(k)])
    labels = list(range(k))
    p, r, f, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert m["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    for average in ("macro", "weighted"):
        assert m[f"f1_{average}"] == pytest.approx(
            skm.f1_score(y_true, y_pred, labels=labels, average=average, zero_division=0))
        assert m[f"precision_{average}"] == pytest.approx(
            skm.precision_score(y_true, y_pred, labels=labels, average=average, zero_division=0))
        assert m[f"recall_{average}"] == pytest.approx(
            skm.recall_score(y_true, y_pred, labels=labels, average=average, zero_division=0))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))
    for i in range(k):
        row = m["per_class"][str(i)]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (p[i], r[i], f[i], support[i]))
    expected_auc = {str(i): skm.roc_auc_score(y_true == i, probs[:, i]) for i in range(4)}
    assert m["roc_auc_per_class"] == pytest.approx(expected_auc)
    assert m["roc_auc_macro"] == pytest.approx(np.mean(list(expected_auc.values())))


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
def test_degenerate_cases_give_zero_not_nan():
    """One class only: MCC is undefined (0, as scikit-learn gives), no AUC, and the absent class scores 0 (all of its negatives are right)."""
    m = compute_metrics([1, 1, 1], [1, 1, 1], [[0.1, 0.9]] * 3, ["0", "1"])
    assert m["mcc"] == 0.0 and m["accuracy"] == 1.0 and m["roc_auc_macro"] is None
    assert m["per_class"]["0"] == {"precision": 0.0, "recall": 0.0, "specificity": 1.0, "f1": 0.0, "support": 0}


def test_printed_table_shows_the_figures(hand_case):
    text = format_metrics(hand_case)
    assert f"MCC {MCC:.4f}" in text
    assert f"F1 macro {F1_MACRO:.4f}" in text
    assert f"ROC AUC macro {np.mean(list(AUC.values())):.4f}" in text
    assert "confusion matrix" in text
    assert len(text.splitlines()) >= 3 + len(NAMES) + 1 + len(NAMES)


def test_accuracy_and_loss_are_over_samples_not_batches(monkeypatch):
    """With uneven batches (4, 4, 2) the mean of batch accuracies differs from the true one."""
    from mobilenet_lab import evaluation
    monkeypatch.setattr(evaluation, "BATCH", 4)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.randn(10, 1, 2, 2)
    y = torch.tensor(Y_TRUE)
    out = evaluate(net, x, y)
    with torch.no_grad():
        logits = net(x)
    assert out.accuracy == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert out.loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5)


def test_metrics_json_holds_the_hand_computed_case(tmp_path):
    """report_results (what the root script calls) puts the test metrics into the record of metrics.json."""
    from mobilenet_lab.data import ImageSet, Splits
    from mobilenet_lab.model import init_network
    from mobilenet_lab.files import write_json
    from mobilenet_lab.runs import report_results

    empty = ImageSet(torch.empty((0, 1, 28, 28), dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
    test = ImageSet(torch.zeros((10, 1, 28, 28), dtype=torch.uint8), torch.tensor(Y_TRUE))
    scores = {"probs": torch.tensor(PROBS), "loss": 0.5, "accuracy": 0.8}
    text, record = report_results(init_network(1, 1, (1, 28, 28), 3, "cpu"), Splits(empty, empty, test, 3), torch.tensor(Y_PRED),
                                  scores, {"train_loss": 0.1, "train_accuracy": 0.9}, {}, False, {"name": "Ada"})
    write_json(tmp_path / "metrics.json", record)
    record = json.loads((tmp_path / "metrics.json").read_text())
    m = record["test_metrics"]
    assert record["test_accuracy"] == pytest.approx(0.8) and record["train_accuracy"] == pytest.approx(0.9)
    assert record["test_f1_macro"] == pytest.approx(F1_MACRO) and record["name"] == "Ada"
    assert record["confusion_matrix"] == CONFUSION
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["f1_weighted"] == pytest.approx(F1_WEIGHTED)
    assert m["mcc"] == pytest.approx(MCC)
    assert m["roc_auc_per_class"] == pytest.approx(AUC)
    assert [m["per_class"][n]["f1"] for n in NAMES] == pytest.approx(F1)
    assert [m["per_class"][n]["specificity"] for n in NAMES] == pytest.approx(SPECIFICITY)
    assert "train       loss 0.1000   accuracy 0.9000  (recorded at training time)" in text
