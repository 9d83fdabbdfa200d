"""Classification metrics from scikit-learn, and their printed form.

Every figure is over images (never an average of batch figures), with the true labels first. ROC AUC is one-vs-rest
from the softmax probabilities, not from hard labels."""
import numpy as np
import pandas as pd
from sklearn import metrics as skm


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def compute_metrics(y_true, y_pred, probs=None, class_names: list[str] | None = None) -> dict:
    """Accuracy, balanced accuracy, precision / recall / specificity / F1 per class and averaged (macro and weighted),
    Matthews correlation, ROC AUC, and the confusion matrix (rows: true class, columns: predicted class). A class no
    image has scores 0; the test set is never empty."""
    y_true, y_pred = _np(y_true).astype(int), _np(y_pred).astype(int)
    names = list(class_names or map(str, range(max(y_true.max(initial=0), y_pred.max(initial=0)) + 1)))
    labels = list(range(len(names)))
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    report = skm.classification_report(y_true, y_pred, labels=labels, target_names=names, output_dict=True,
                                       zero_division=0)
    negatives = cm.sum() - cm.sum(1)  # per class: the images of the other classes
    specificity = np.divide(negatives - (cm.sum(0) - np.diag(cm)), negatives, out=np.zeros(len(names)),
                            where=negatives > 0)
    out = {"n": int(len(y_true)), "accuracy": float(skm.accuracy_score(y_true, y_pred)),
           "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
           **{f"{what}_{avg}": float(report[f"{avg} avg"][what if what != "f1" else "f1-score"])
              for avg in ("macro", "weighted") for what in ("precision", "recall", "f1")},
           "specificity_macro": float(specificity.mean()), "mcc": float(skm.matthews_corrcoef(y_true, y_pred)),
           "per_class": {n: {"precision": float(report[n]["precision"]), "recall": float(report[n]["recall"]),
                             "specificity": float(s), "f1": float(report[n]["f1-score"]),
                             "support": int(report[n]["support"])} for n, s in zip(names, specificity)},
           "confusion_matrix": cm.tolist(), "class_names": names}
    if probs is not None:
        aucs = {name: float(skm.roc_auc_score(y_true == i, _np(probs)[:, i])) for i, name in enumerate(names)
                if 0 < (y_true == i).sum() < len(y_true)}  # a class needs positives and negatives
        out.update(roc_auc_per_class=aucs, roc_auc_macro=float(np.mean(list(aucs.values()))) if aucs else None)
    return out


def format_metrics(m: dict) -> str:
    """A readable block: headline figures, a per-class table and the confusion matrix."""
    auc = f"{m['roc_auc_macro']:.4f}" if m.get("roc_auc_macro") is not None else "n/a"
    table = pd.DataFrame.from_dict(m["per_class"], orient="index")
    table.insert(4, "AUC", [m.get("roc_auc_per_class", {}).get(name, float("nan")) for name in table.index])
    table.insert(0, "class", table.index)
    matrix = pd.DataFrame(m["confusion_matrix"], columns=m["class_names"])
    matrix.insert(0, "true\\pred", m["class_names"])
    return "\n".join([
        f"accuracy {m['accuracy']:.4f}   balanced accuracy {m['balanced_accuracy']:.4f}   "
        f"F1 macro {m['f1_macro']:.4f}   F1 weighted {m['f1_weighted']:.4f}",
        f"precision macro {m['precision_macro']:.4f}   recall macro {m['recall_macro']:.4f}   "
        f"specificity macro {m['specificity_macro']:.4f}   MCC {m['mcc']:.4f}   ROC AUC macro {auc}", "",
        table.to_string(index=False, float_format="{:.4f}".format, na_rep="n/a"), "",
        "confusion matrix (rows: true class, columns: predicted class)",
        matrix.to_string(index=False)])
