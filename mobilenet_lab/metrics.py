"""Classification metrics from scikit-learn, and their printed form.

Every figure is over samples (never an average of batch figures), with y_true first. ROC AUC is one-vs-rest from the
softmax probabilities, not from hard labels."""
import warnings

import numpy as np
from sklearn import metrics as skm


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def compute_metrics(y_true, y_pred, probs=None, class_names: list[str] | None = None) -> dict:
    """Accuracy, balanced accuracy, precision / recall (sensitivity) / specificity / F1 per class and averaged, Matthews
    correlation, ROC AUC and the confusion matrix (rows: true, columns: predicted)."""
    y_true, y_pred = _np(y_true).astype(int), _np(y_pred).astype(int)
    k = len(class_names) if class_names else int(max(y_true.max(initial=0), y_pred.max(initial=0)) + 1)
    names, labels = list(class_names or map(str, range(k))), list(range(k))
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels) if len(y_true) else np.zeros((k, k), dtype=int)
    with warnings.catch_warnings():  # classes absent from y_true or y_pred score 0 by the rules below
        warnings.simplefilter("ignore")
        precision, recall, f1, support = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=0) if len(y_true) else [np.zeros(k)] * 4
        tn, fp = cm.sum() - cm.sum(0) - cm.sum(1) + np.diag(cm), cm.sum(0) - np.diag(cm)
        specificity = np.divide(tn, tn + fp, out=np.zeros(k), where=(tn + fp) > 0)
        averaged = {}
        for avg in ("macro", "weighted"):
            scores = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg,
                                                         zero_division=0)[:3] if len(y_true) else (0.0,) * 3
            averaged.update({f"{what}_{avg}": float(v) for what, v in zip(("precision", "recall", "f1"), scores)})
        out = {
            "n": int(len(y_true)),
            "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
            "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
            **averaged,
            "specificity_macro": float(specificity.mean()),
            "mcc": float(skm.matthews_corrcoef(y_true, y_pred)) if len(y_true) else 0.0,
            "per_class": {name: {"precision": float(p), "recall": float(r), "specificity": float(s), "f1": float(f),
                                 "support": int(c)}
                          for name, p, r, s, f, c in zip(names, precision, recall, specificity, f1, support)},
            "confusion_matrix": cm.tolist(),
            "class_names": names,
        }
    if probs is not None:
        probs = _np(probs)
        aucs = {name: float(skm.roc_auc_score(y_true == i, probs[:, i])) for i, name in enumerate(names)
                if 0 < (y_true == i).sum() < len(y_true)}  # a class needs positives and negatives
        out.update(roc_auc_per_class=aucs, roc_auc_macro=float(np.mean(list(aucs.values()))) if aucs else None)
    return out


def roc_curves(y_true, probs, class_names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """One-vs-rest ROC curves from the probabilities: {class: (false positive rates, true positive rates, AUC)}, leaving
    out classes with no positive or no negative sample."""
    y_true, probs = _np(y_true).astype(int), _np(probs)
    curves = {}
    for i, name in enumerate(class_names):
        if 0 < (y_true == i).sum() < len(y_true):
            fpr, tpr, _ = skm.roc_curve(y_true == i, probs[:, i])
            curves[name] = (fpr, tpr, float(skm.auc(fpr, tpr)))
    return curves


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
