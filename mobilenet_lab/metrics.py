"""Classification metrics, computed with scikit-learn, and their printed form.

Every metric is over samples (never an average of batch figures), with y_true first.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def compute_metrics(y_true, y_pred, probs=None, class_names: list[str] | None = None) -> dict:
    """Accuracy, balanced accuracy, per-class and averaged precision / recall (sensitivity) /
    specificity / F1, Matthews correlation, one-vs-rest ROC AUC (from probabilities) and the
    confusion matrix (rows: true class, columns: predicted)."""
    y_true, y_pred = _np(y_true).astype(int), _np(y_pred).astype(int)
    k = len(class_names) if class_names else int(max(y_true.max(initial=0), y_pred.max(initial=0)) + 1)
    labels = list(range(k))
    names = list(class_names or [str(i) for i in labels])
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    tn = cm.sum() - cm.sum(0) - cm.sum(1) + np.diag(cm)
    fp = cm.sum(0) - np.diag(cm)
    specificity = np.divide(tn, tn + fp, out=np.zeros(k), where=(tn + fp) > 0)
    present = support > 0
    out = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "specificity_macro": float(specificity.mean()),
        "f1_macro": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "f1_weighted": float(skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "precision_weighted": float(np.average(precision, weights=support)) if support.sum() else 0.0,
        "recall_weighted": float(np.average(recall, weights=support)) if support.sum() else 0.0,
        "mcc": float(skm.matthews_corrcoef(y_true, y_pred)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "specificity": float(s), "f1": float(f),
                   "support": int(n)}
            for name, p, r, s, f, n in zip(names, precision, recall, specificity, f1, support)},
        "confusion_matrix": cm.tolist(),
        "class_names": names,
    }
    if probs is not None:
        out.update(roc_auc(y_true, _np(probs), names))
    return out


def roc_auc(y_true: np.ndarray, probs: np.ndarray, names: list[str]) -> dict:
    """One-vs-rest ROC AUC per class and their macro mean; classes absent from y_true are skipped."""
    per_class = {}
    for i, name in enumerate(names):
        positives = y_true == i
        if positives.any() and (~positives).any():
            per_class[name] = float(skm.roc_auc_score(positives, probs[:, i]))
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
    y_true, probs = _np(y_true).astype(int), _np(probs)
    curves = {}
    for i, name in enumerate(class_names):
        positives = y_true == i
        if positives.any() and (~positives).any():
            fpr, tpr, _ = skm.roc_curve(positives, probs[:, i])
            curves[name] = (fpr, tpr, float(skm.auc(fpr, tpr)))
    return curves
