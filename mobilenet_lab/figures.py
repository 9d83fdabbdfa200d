"""The assignment's visualize step: ``visualize`` writes 01_curves.png ... 04_confusion_matrix.png, one ``plot_*``
function each. The plotters take arrays (the report draws them from stored results) and draw on the Agg canvas: no
display is needed."""
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from .errors import UserError
from .evaluation import evaluate
from .metrics import compute_metrics

DPI = 150
EXAMPLES = 4          # correct and wrong predictions shown in figure 3
SAMPLE_GRID = 24      # test images in figure 2
# Sizes and type chosen for a page about 7 inches wide: no text below 7 pt when set at full width.
STYLE = {"font.size": 9, "axes.titlesize": 9.5, "figure.titlesize": 10.5, "legend.fontsize": 8,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False}
CORRECT_COLOR, WRONG_COLOR = "#1a7f37", "#c62828"
FigureFactory = Callable[[tuple[float, float]], Figure]


def visualize(net: nn.Module, history, test_set_x, test_set_y, pred, probs=None, out_dir: str | Path = "figures"
              ) -> list[Path]:
    """Save the figures as PNGs in ``out_dir`` and return their paths: the loss and accuracy curves of ``history``
    (train's History or it as a dict; None: a note), sample test images with the model's predictions ``pred`` on them,
    4 correct and 4 wrong predictions, and the confusion matrix with the accuracy and F1 score. ``probs``: the softmax
    probabilities behind ``pred`` (default: computed here)."""
    images, y_true = torch.as_tensor(test_set_x), np.asarray(test_set_y).astype(int)
    probs = evaluate(net, images).probs if probs is None else probs
    y_pred, probs = np.asarray(pred).astype(int), np.asarray(probs, dtype=float)
    if len(y_true) == 0:
        raise UserError("nothing to visualize: the test set is empty (check --test-size)")
    names = [str(i) for i in range(probs.shape[1])]
    metrics = compute_metrics(y_true, y_pred, probs, names)
    correct, wrong = pick_examples(y_true, y_pred, probs)
    history = history.as_dict() if hasattr(history, "as_dict") else history or {}
    draws = {
        "01_curves": lambda make: plot_curves(make, history),
        "02_samples": lambda make: plot_samples(make, images, y_true, y_pred, probs, names),
        "03_predictions": lambda make: plot_predictions(make, images, y_true, y_pred, probs, names, correct, wrong),
        "04_confusion_matrix": lambda make: plot_confusion(make, metrics, names),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        for name, draw in draws.items():
            draw(make_figure).savefig(out_dir / f"{name}.png", dpi=DPI, facecolor="white")
    return [out_dir / f"{name}.png" for name in draws]


def make_figure(size: tuple[float, float]) -> Figure:
    """A figure on the Agg canvas (no display, no global pyplot state), laid out to fit its text."""
    return Figure(figsize=size, layout="constrained")


def pick_examples(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, k: int = EXAMPLES,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``k`` correct predictions (random, of different classes when possible) and of the ``k`` wrong
    predictions with the highest confidence."""
    confidence = probs[np.arange(len(y_pred)), y_pred]
    wrong = np.flatnonzero(y_true != y_pred)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:k]
    correct = np.random.default_rng(seed).permutation(np.flatnonzero(y_true == y_pred))
    _, first = np.unique(y_true[correct], return_index=True)  # one of each class first: variety before repeats
    order = np.concatenate([np.sort(first), np.setdiff1d(np.arange(len(correct)), first)])
    return correct[order[:k]], wrong


def _show_image(ax, image) -> None:
    array = np.asarray(image)
    ax.imshow(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0), cmap="gray", vmin=0,
              vmax=255 if array.dtype == np.uint8 else 1)
    ax.set(xticks=[], yticks=[])


def _placeholder(fig: Figure, text: str) -> Figure:
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11, transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def _label(names: list[str], y_true: int, y_pred: int, confidence: float) -> str:
    return f"true {names[y_true]} · pred {names[y_pred]}\nconfidence {confidence:.1%}"


def plot_curves(make: FigureFactory, history: dict) -> Figure:
    """Figure 1: loss and accuracy of training and validation per epoch."""
    epochs = list(history.get("epoch") or [])
    if not epochs:
        fig = _placeholder(make((7.5, 2.2)), "No training history in this model, so no loss and accuracy curves.\n"
                                             "Train with --train to record them.")
        fig.suptitle("Loss and accuracy curves: not available")
        return fig
    fig, best = make((7.5, 3.2)), history.get("best_epoch")
    for ax, key, what in zip(fig.subplots(1, 2), ("loss", "acc"), ("Loss", "Accuracy")):
        # training loss: the recipe's loss function on augmented batches; validation loss: plain cross-entropy
        loss = key == "loss"
        ax.plot(epochs, history[f"train_{key}"], "o-", ms=3, color="C0", label="training" + " (its loss)" * loss)
        ax.plot(epochs, history[f"val_{key}"], "s-", ms=3, color="C1", label="validation" + " (cross-entropy)" * loss)
        if best:
            ax.axvline(best, ls="--", color="gray", label=f"best validation accuracy (epoch {best})")
        ax.set(xlabel="epoch", ylabel=what.lower() + (" (fraction correct)" if key == "acc" else ""),
               title=f"{what} per epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Training and validation curves over {len(epochs)} epoch{'s' * (len(epochs) != 1)} "
                 f"(training figures are measured on the augmented batches)")
    return fig


def plot_samples(make: FigureFactory, images, y_true, y_pred, probs, names, count: int = SAMPLE_GRID,
                 seed: int = 0) -> Figure:
    """Figure 2: random test images with true label, prediction and confidence (green right, red wrong)."""
    n = min(count, len(y_true))
    chosen = np.random.default_rng(seed).choice(len(y_true), n, replace=False)
    cols = min(8, n)
    fig = make((7.5, -(-n // cols) * 1.2 + 0.5))
    axes = fig.subplots(-(-n // cols), cols, squeeze=False).ravel()
    for ax, i in zip(axes, chosen):
        _show_image(ax, images[i])
        ax.set_title(_label(names, y_true[i], y_pred[i], probs[i, y_pred[i]]), fontsize=7,
                     color=CORRECT_COLOR if y_true[i] == y_pred[i] else WRONG_COLOR)
    for ax in axes[n:]:
        ax.set_axis_off()
    shown_wrong = int((y_true[chosen] != y_pred[chosen]).sum())
    fig.suptitle(f"{n} random test images of {len(y_true):,}: true label, prediction and its softmax confidence "
                 f"({shown_wrong} wrong here, in red)")
    return fig


def _example_rows(make: FigureFactory, rows: list[tuple[str, str, np.ndarray]]) -> tuple:
    """A figure with one row of EXAMPLES panels per non-empty row (label, colour, indices)."""
    kept = [k for k, row in enumerate(rows) if len(row[2])]
    fig = make((7.5, len(kept) * 1.85 + 0.6))
    axes = fig.subplots(len(kept), EXAMPLES, squeeze=False)
    for row_axes, k in zip(axes, kept):
        row_axes[0].set_ylabel(rows[k][0], color=rows[k][1])
        for ax in row_axes[len(rows[k][2]):]:
            ax.set_axis_off()
    return fig, axes, kept


def _missing(correct, wrong, n: int) -> str:
    return "".join(f"\nno {what} predictions among the {n:,} test images"
                   for what, picked in (("correct", correct), ("wrong", wrong)) if len(picked) == 0)


def plot_predictions(make: FigureFactory, images, y_true, y_pred, probs, names, correct, wrong,
                     wrong_in_all: int | None = None) -> Figure:
    """Figure 3: correct predictions and the most confident wrong ones, with confidence (``wrong_in_all``: how many are
    wrong in the whole test set, when the arrays hold only the examples)."""
    total = int((y_true != y_pred).sum()) if wrong_in_all is None else wrong_in_all
    rows = [("correct\n(random, different classes)", CORRECT_COLOR, correct),
            (f"wrong: the {len(wrong)} most confident\n({total:,} wrong in all)", WRONG_COLOR, wrong)]
    fig, axes, kept = _example_rows(make, rows)
    for row_axes, k in zip(axes, kept):
        for ax, i in zip(row_axes, rows[k][2]):
            _show_image(ax, images[i])
            text = _label(names, y_true[i], y_pred[i], probs[i, y_pred[i]])
            if y_true[i] != y_pred[i]:
                text += f"\np(true {names[y_true[i]]}) {probs[i, y_true[i]]:.1%}"
            ax.set_title(text, fontsize=8, color=CORRECT_COLOR if y_true[i] == y_pred[i] else WRONG_COLOR)
    where = f" on the {len(y_true):,} test images" if wrong_in_all is None else ""  # else y_true holds only those shown
    fig.suptitle(f"Correct and wrong predictions{where} (confidence: softmax probability of the predicted class)"
                 + _missing(correct, wrong, len(y_true)))
    return fig


def plot_confusion(make: FigureFactory, metrics: dict, names: list[str]) -> Figure:
    """Figure 4: the confusion matrix as heatmaps, counts and row-normalised (the diagonal is the recall)."""
    cm = np.asarray(metrics["confusion_matrix"])
    rows = cm.sum(1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.full(cm.shape, np.nan), where=rows > 0)  # no images: a blank row
    fig = make((7.5, 3.6))
    for ax, data, fmt, title in zip(fig.subplots(1, 2), (cm, normalised), ("d", ".2f"),
                                    ("Counts (rows: true class)", "Share of each true class (diagonal: recall)")):
        sns.heatmap(data, ax=ax, annot=len(cm) <= 20, fmt=fmt, cmap="Blues", square=True, linewidths=0.4,
                    xticklabels=names, yticklabels=names, cbar_kws={"shrink": 0.8}, vmin=0,
                    vmax=1 if fmt != "d" else None, annot_kws={"fontsize": 6.5 if len(cm) <= 10 else 5})
        ax.set(xlabel="predicted class", ylabel="true class", title=title)
        ax.tick_params(axis="y", rotation=0)
    fig.suptitle(f"Confusion matrix on {metrics['n']:,} test images: accuracy {metrics['accuracy']:.2%}, "
                 f"F1 macro {metrics['f1_macro']:.4f}, MCC {metrics['mcc']:.4f}")
    return fig
