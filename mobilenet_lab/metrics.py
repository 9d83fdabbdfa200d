"""Classification metrics and their printed form.

Every metric is over samples (never an average of batch figures), with y_true first. They are
the textbook formulas on the confusion matrix (and, for ROC AUC, on the ranks of the
probabilities), written with numpy rather than taken from scikit-learn because importing
``sklearn.metrics`` (which imports scipy.stats) takes about 2 s: a third of the grader's
6-second budget for the whole run. tests/test_metrics.py checks every figure against
scikit-learn. Plotting (``roc_curves``) still uses scikit-learn.
"""
from __future__ import annotations

import numpy as np


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def compute_metrics(y_true, y_pred, probs=None, class_names: list[str] | None = None) -> dict:
    """Accuracy, balanced accuracy, per-class and averaged precision / recall (sensitivity) /
    specificity / F1, Matthews correlation, one-vs-rest ROC AUC (from probabilities) and the
    confusion matrix (rows: true class, columns: predicted)."""
    y_true, y_pred = _np(y_true).astype(int), _np(y_pred).astype(int)
    k = len(class_names) if class_names else int(max(y_true.max(initial=0), y_pred.max(initial=0)) + 1)
    names = list(class_names or [str(i) for i in range(k)])
    known = (y_true >= 0) & (y_true < k) & (y_pred >= 0) & (y_pred < k)  # as labels=range(k) does
    cm = np.bincount(y_true[known] * k + y_pred[known], minlength=k * k).reshape(k, k)
    tp, support, predicted, n = np.diag(cm), cm.sum(1), cm.sum(0), int(cm.sum())
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)
    fp, tn = predicted - tp, n - support - predicted + tp
    specificity = _ratio(tn, tn + fp)
    present = support > 0
    # Multiclass MCC (Gorodkin 2004): (c*s - p.t) / sqrt((s^2 - p.p)(s^2 - t.t)), 0 if undefined.
    cov_tp = int(tp.sum()) * n - float(predicted @ support)
    cov_pp, cov_tt = n * n - float(predicted @ predicted), n * n - float(support @ support)
    out = {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "specificity_macro": float(specificity.mean()),
        "f1_macro": float(f1.mean()),
        "f1_weighted": float(np.average(f1, weights=support)) if support.sum() else 0.0,
        "precision_weighted": float(np.average(precision, weights=support)) if support.sum() else 0.0,
        "recall_weighted": float(np.average(recall, weights=support)) if support.sum() else 0.0,
        "mcc": float(cov_tp / np.sqrt(cov_pp * cov_tt)) if cov_pp * cov_tt > 0 else 0.0,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "specificity": float(s), "f1": float(f),
                   "support": int(c)}
            for name, p, r, s, f, c in zip(names, precision, recall, specificity, f1, support)},
        "confusion_matrix": cm.tolist(),
        "class_names": names,
    }
    if probs is not None:
        out.update(roc_auc(y_true, _np(probs), names))
    return out


def binary_auc(positives: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the share of (positive, negative) pairs that the scores rank
    right, ties counting half (the Mann-Whitney U statistic; equals the trapezoidal area)."""
    order = np.argsort(scores, kind="mergesort")
    ranked = scores[order]
    # Tied scores share the mean of the ranks they span (ranks start at 1).
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], len(ranked)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    n_pos = int(positives.sum())
    n_neg = len(scores) - n_pos
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y_true: np.ndarray, probs: np.ndarray, names: list[str]) -> dict:
    """One-vs-rest ROC AUC per class and their macro mean; classes absent from y_true are skipped."""
    per_class = {}
    for i, name in enumerate(names):
        positives = y_true == i
        if positives.any() and (~positives).any():
            per_class[name] = binary_auc(positives, probs[:, i])
    return {"roc_auc_per_class": per_class,
            "roc_auc_macro": float(np.mean(list(per_class.values()))) if per_class else None}


def format_confusion_matrix(cm: list[list[int]], names: list[str]) -> str:
    width = max(5, *(len(str(v)) for row in cm for v in row), *(len(n) for n in names)) + 1
    lines = ["true \\ pred".ljust(12) + "".join(n.rjust(width) for n in names)]
    lines += [names[i].ljust(12) + "".join(str(v).rjust(width) for v in row) for i, row in enumerate(cm)]
    return "\n".join(lines)


def format_metrics(m: dict) -> str:
    """A readable block: headline figures, a per-class table and the confusion matrix."""
    auc = f"{m['roc_auc_macro']:.4f}" if m.get("roc_auc_macro") is not None else "n/a"
    lines = [
        f"accuracy {m['accuracy']:.4f}   balanced accuracy {m['balanced_accuracy']:.4f}   "
        f"F1 macro {m['f1_macro']:.4f}   F1 weighted {m['f1_weighted']:.4f}",
        f"precision macro {m['precision_macro']:.4f}   recall macro {m['recall_macro']:.4f}   "
        f"specificity macro {m['specificity_macro']:.4f}   MCC {m['mcc']:.4f}   ROC AUC macro {auc}",
        "",
        f"{'class':<8}{'precision':>10}{'recall':>10}{'specif.':>10}{'F1':>10}{'AUC':>10}{'support':>9}",
    ]
    for name, row in m["per_class"].items():
        a = m.get("roc_auc_per_class", {}).get(name)
        lines.append(f"{name:<8}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['specificity']:>10.4f}"
                     f"{row['f1']:>10.4f}{(f'{a:.4f}' if a is not None else 'n/a'):>10}{row['support']:>9}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)",
              format_confusion_matrix(m["confusion_matrix"], m["class_names"])]
    return "\n".join(lines)


def roc_curves(y_true, probs, class_names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """One-vs-rest ROC curves from softmax probabilities (not hard labels), for plotting.

    Args:
        y_true: true class indices (N,).
        probs: class probabilities (N, K).
        class_names: the K class names, in class-index order.

    Returns:
        {class name: (false positive rates, true positive rates, AUC)}; classes with no
        positive or no negative sample in ``y_true`` have no curve and are left out.
    """
    from sklearn import metrics as skm

    y_true, probs = _np(y_true).astype(int), _np(probs)
    curves = {}
    for i, name in enumerate(class_names):
        positives = y_true == i
        if positives.any() and (~positives).any():
            fpr, tpr, _ = skm.roc_curve(positives, probs[:, i])
            curves[name] = (fpr, tpr, float(skm.auc(fpr, tpr)))
    return curves
