"""The assignment's visualize step: pictures of a trained model and its test-set results.

:func:`visualize` writes these PNG files into the run folder, in this order:

  01_curves.png            training and validation loss and accuracy per epoch, best and kept epochs marked
                           (from the model's history; a note instead when it has none)
  02_samples.png           a grid of random test images with true label, prediction and confidence
  03_predictions.png       4 correct predictions and the 4 wrong ones the model was most confident about
  04_confusion_matrix.png  the confusion matrix as seaborn heatmaps: counts and row-normalised
  05_per_class.png         precision, recall and F1 per class, beside the training class counts
  06_filters.png           learned filters of the first and the last convolution layers
  07_roc.png               one-vs-rest ROC curves per class with their AUC (linear and log FPR axes)
  08_tsne.png              t-SNE map of the penultimate-layer features of (a subsample of) the test set
  09_gradcam.png           Grad-CAM heatmaps over the correct and wrong predictions of 03_predictions.png

Plotting never needs a display: figures are drawn on matplotlib's Agg canvas (no pyplot
state) unless ``show=True`` and a display exists; then they are also opened in windows.
"""
from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from .errors import UserError, note
from .gradcam import grad_cam
from .metrics import compute_metrics, roc_curves

DPI = 110
EXAMPLES = 4          # correct and wrong predictions shown in figures 3 and 9
SAMPLE_GRID = 32      # test images in figure 2
FILTER_TILES = 64     # kernels shown per filter panel
STYLE = {"font.size": 10, "axes.titlesize": 11, "figure.titlesize": 13, "legend.fontsize": 9,
         "axes.spines.top": False, "axes.spines.right": False}
CORRECT_COLOR, WRONG_COLOR = "#1a7f37", "#c62828"

FigureFactory = Callable[[tuple[float, float]], Figure]


# ---------------------------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------------------------
def visualize(net: nn.Module, splits, pred, metrics: dict | None, out_dir: str | Path, show: bool = False,
              class_names: list[str] | None = None, tsne_samples: int = 2000) -> list[Path]:
    """Save the figures listed in the module docstring as PNGs in ``out_dir``.

    Works right after :func:`train` (history on ``net.history``) and for a model from
    :func:`load` (history and training class counts from its checkpoint).

    Args:
        net: the trained network (``MobileNetLab``).
        splits: the data (``Splits``); its test images and labels are the ones ``pred`` is about.
        pred: ``Predictions`` of ``net`` on ``splits.test_x`` (labels and softmax probabilities).
        metrics: ``compute_metrics`` output for those predictions; None computes it here.
        out_dir: the folder to write into (created when missing).
        show: also open the figures in windows when a display exists.
        class_names: names of the classes in index order; default: the metrics', the
            checkpoint's, or "0", "1", ...
        tsne_samples: test images embedded by t-SNE (a random subsample, for speed).

    Returns:
        The paths of the PNG files written, in the order above.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y_true = splits.test_y.cpu().numpy().astype(int)
    y_pred = pred.labels.cpu().numpy().astype(int)
    probs = pred.probs.cpu().float().numpy()
    if len(y_true) == 0:
        raise UserError("nothing to visualize: the test set is empty (check --test-size)")
    if len(y_pred) != len(y_true):
        raise UserError(f"{len(y_pred)} predictions for {len(y_true)} test images: predict on splits.test_x")
    checkpoint = getattr(net, "checkpoint", None) or {}
    num_classes = probs.shape[1]
    names = list(class_names or (metrics or {}).get("class_names") or checkpoint.get("class_names")
                 or [str(i) for i in range(num_classes)])
    metrics = metrics or compute_metrics(y_true, y_pred, probs, names)
    history = getattr(net, "history", None) or checkpoint.get("history") or {}
    images = splits.test_x
    correct, wrong = pick_examples(y_true, y_pred, probs)
    interactive = show and _interactive_backend()

    figures: list[tuple[str, Callable[[FigureFactory], Figure]]] = [
        ("01_curves", lambda make: plot_curves(make, history)),
        ("02_samples", lambda make: plot_samples(make, images, y_true, y_pred, probs, names)),
        ("03_predictions", lambda make: plot_predictions(make, images, y_true, y_pred, probs, names, correct, wrong)),
        ("04_confusion_matrix", lambda make: plot_confusion(make, metrics, names)),
        ("05_per_class", lambda make: plot_per_class(make, metrics, names, training_class_counts(net, splits))),
        ("06_filters", lambda make: plot_filters(make, net)),
        ("07_roc", lambda make: plot_roc(make, y_true, probs, names, metrics)),
        ("08_tsne", lambda make: plot_tsne(make, net, images, y_true, y_pred, names, tsne_samples)),
        ("09_gradcam", lambda make: plot_gradcam(make, net, images, y_true, y_pred, probs, names, correct, wrong)),
    ]
    make = _figure_factory(interactive)
    paths = []
    with matplotlib.rc_context(STYLE):
        for name, draw in figures:
            fig = draw(make)
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=DPI, facecolor="white")
            paths.append(path)
    if interactive:
        import matplotlib.pyplot as plt
        plt.show()
        plt.close("all")
    return paths


def _display_available() -> bool:
    """True on Windows and macOS, and on other systems when an X11 or Wayland display is set."""
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _interactive_backend() -> bool:
    """Whether figures can be opened in windows; says why not when they cannot."""
    if not _display_available():
        note("--show: no display found (DISPLAY/WAYLAND_DISPLAY unset); the figures are only saved")
        return False
    import matplotlib.pyplot as plt  # only here: picking a GUI backend needs the display
    if plt.get_backend().lower() in ("agg", "pdf", "ps", "svg", "cairo", "template"):
        note(f"--show: matplotlib has no window backend here ({plt.get_backend()}); the figures are only saved")
        return False
    return True


def _figure_factory(interactive: bool) -> FigureFactory:
    """Figures through pyplot (windows) when interactive, else plain Agg ``Figure`` objects."""
    if interactive:
        import matplotlib.pyplot as plt
        return lambda size: plt.figure(figsize=size, layout="constrained")
    return lambda size: Figure(figsize=size, layout="constrained")


# ---------------------------------------------------------------------------------------------
# Shared helpers.
# ---------------------------------------------------------------------------------------------
def training_class_counts(net: nn.Module, splits) -> list[int] | None:
    """Training images per class: from the checkpoint of a loaded model, else from the training
    split when it is loaded, else None."""
    counts = ((getattr(net, "checkpoint", None) or {}).get("train_args") or {}).get("class_counts")
    if counts:
        return [int(c) for c in counts]
    if len(splits.train_y):
        return splits.class_counts("train")
    return None


def pick_examples(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, k: int = EXAMPLES,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``k`` correct predictions (random, of different classes when possible) and of
    the ``k`` wrong predictions with the highest confidence.

    Args:
        y_true, y_pred: true and predicted classes (N,).
        probs: softmax probabilities (N, K).
        k: how many of each.
        seed: picks the correct ones.
    """
    confidence = probs[np.arange(len(y_pred)), y_pred]
    wrong = np.flatnonzero(y_true != y_pred)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:k]
    correct = np.random.default_rng(seed).permutation(np.flatnonzero(y_true == y_pred))
    # first image of each class in the shuffled order, then the rest: variety before repeats
    _, first = np.unique(y_true[correct], return_index=True)
    order = np.concatenate([np.sort(first), np.setdiff1d(np.arange(len(correct)), first)])
    return correct[order[:k]], wrong


def _show_image(ax, image: torch.Tensor) -> None:
    """Draw one uint8 (C, H, W) image without axes."""
    array = image.cpu().numpy()
    if array.shape[0] == 1:
        ax.imshow(array[0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(array.transpose(1, 2, 0))
    ax.set_xticks([])
    ax.set_yticks([])


def _placeholder(ax, text: str) -> None:
    """An empty axes that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=12, transform=ax.transAxes)
    ax.set_axis_off()


def _label(names: list[str], y_true: int, y_pred: int, confidence: float) -> str:
    return f"true {names[y_true]} · pred {names[y_pred]}\nconfidence {confidence:.1%}"


# ---------------------------------------------------------------------------------------------
# The figures, one function each.
# ---------------------------------------------------------------------------------------------
def plot_curves(make: FigureFactory, history: dict) -> Figure:
    """Figure 1: loss and accuracy of training and validation per epoch.

    Args:
        make: creates an empty figure of a given size.
        history: ``net.history`` (epoch, train_loss, train_acc, val_loss, val_acc, best_epoch, kept_epoch).
    """
    epochs = list(history.get("epoch") or [])
    if not epochs:
        fig = make((9, 3))
        _placeholder(fig.subplots(), "No training history in this model, so no loss and accuracy curves.\n"
                                     "Train with --train to record them (a model saved by train() keeps them).")
        fig.suptitle("Loss and accuracy curves: not available")
        return fig
    fig = make((12, 4.6))
    best = history.get("best_epoch")
    kept = history.get("kept_epoch", best)  # models from before --keep kept the best epoch
    for ax, key, what in zip(fig.subplots(1, 2), ("loss", "acc"), ("Loss", "Accuracy")):
        ax.plot(epochs, history[f"train_{key}"], "o-", label="training", color="C0")
        ax.plot(epochs, history[f"val_{key}"], "s-", label="validation", color="C1")
        if best:
            ax.axvline(best, ls="--", color="gray",
                       label=f"best validation epoch ({best}{', weights kept' if kept == best else ''})")
        if kept and kept != best:
            ax.axvline(kept, ls=":", color="black", label=f"weights kept (epoch {kept})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(what.lower() + (" (fraction correct)" if key == "acc" else ""))
        ax.set_title(f"{what} per epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Training and validation curves over {len(epochs)} epoch{'s' * (len(epochs) != 1)} "
                 f"(training figures are measured on the augmented batches)")
    return fig


def plot_samples(make: FigureFactory, images: torch.Tensor, y_true: np.ndarray, y_pred: np.ndarray,
                 probs: np.ndarray, names: list[str], count: int = SAMPLE_GRID, seed: int = 0) -> Figure:
    """Figure 2: a grid of random test images with true label, prediction and confidence.

    Args:
        make: creates an empty figure of a given size.
        images: test images, uint8 (N, C, H, W).
        y_true, y_pred: true and predicted classes (N,).
        probs: softmax probabilities (N, K).
        names: class names.
        count: images shown.
        seed: picks the images.
    """
    n = min(count, len(y_true))
    chosen = np.random.default_rng(seed).choice(len(y_true), n, replace=False)
    cols = min(8, n)
    rows = -(-n // cols)
    fig = make((cols * 1.55, rows * 1.85 + 0.7))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, i in zip(axes, chosen):
        _show_image(ax, images[i])
        ok = y_true[i] == y_pred[i]
        ax.set_title(_label(names, y_true[i], y_pred[i], probs[i, y_pred[i]]), fontsize=9,
                     color=CORRECT_COLOR if ok else WRONG_COLOR)
    for ax in axes[n:]:
        ax.set_axis_off()
    shown_wrong = int((y_true[chosen] != y_pred[chosen]).sum())
    fig.suptitle(f"{n} random test images (of {len(y_true):,}): true label, prediction and its softmax "
                 f"confidence\ngreen: correct, red: wrong ({shown_wrong} of {n} here)")
    return fig


def _example_rows(make: FigureFactory, rows: list[tuple[str, str, np.ndarray]], title_lines: int = 2) -> tuple:
    """A figure with one row of ``EXAMPLES`` panels per non-empty entry of ``rows``, each row
    labelled on its left; empty rows are left out (the caller says so in its title).

    Args:
        make: creates an empty figure of a given size.
        rows: (row label, label colour, image indices) per row.
        title_lines: lines of each panel's title, for the row height.

    Returns:
        (figure, axes array kept rows x EXAMPLES, indices into ``rows`` of the rows kept).
    """
    kept = [k for k, row in enumerate(rows) if len(row[2])]
    fig = make((EXAMPLES * 2.3 + 1.6, len(kept) * (2.55 + 0.2 * title_lines) + 0.7))
    axes = fig.subplots(len(kept), EXAMPLES, squeeze=False)
    for row_axes, k in zip(axes, kept):
        label, color, picked = rows[k]
        row_axes[0].set_ylabel(label, color=color, fontsize=11)
        for ax in row_axes[len(picked):]:
            ax.set_axis_off()
    return fig, axes, kept


def plot_predictions(make: FigureFactory, images: torch.Tensor, y_true: np.ndarray, y_pred: np.ndarray,
                     probs: np.ndarray, names: list[str], correct: np.ndarray, wrong: np.ndarray) -> Figure:
    """Figure 3: correct predictions and the most confident wrong ones, with confidence.

    Args:
        make: creates an empty figure of a given size.
        images: test images, uint8 (N, C, H, W).
        y_true, y_pred: true and predicted classes (N,).
        probs: softmax probabilities (N, K).
        names: class names.
        correct, wrong: indices to show (from :func:`pick_examples`).
    """
    n, total_wrong = len(y_true), int((y_true != y_pred).sum())
    rows = [("correct\n(random, different classes)", CORRECT_COLOR, correct),
            (f"wrong: the {len(wrong)} most confident\n({total_wrong:,} wrong in all)", WRONG_COLOR, wrong)]
    fig, axes, kept = _example_rows(make, rows, title_lines=3)
    for row_axes, k in zip(axes, kept):
        for ax, i in zip(row_axes, rows[k][2]):
            _show_image(ax, images[i])
            text = _label(names, y_true[i], y_pred[i], probs[i, y_pred[i]])
            if y_true[i] != y_pred[i]:
                text += f"\np(true {names[y_true[i]]}) {probs[i, y_true[i]]:.1%}"
            ax.set_title(text, fontsize=10, color=CORRECT_COLOR if y_true[i] == y_pred[i] else WRONG_COLOR)
    missing = [what for what, picked in (("correct", correct), ("wrong", wrong)) if len(picked) == 0]
    fig.suptitle(f"Correct and wrong predictions on the {n:,} test images\n(confidence: softmax probability of "
                 f"the predicted class)" + "".join(f"\nno {what} predictions among the {n:,} test images"
                                                   for what in missing))
    return fig


def plot_confusion(make: FigureFactory, metrics: dict, names: list[str]) -> Figure:
    """Figure 4: the confusion matrix as seaborn heatmaps, counts and row-normalised.

    Args:
        make: creates an empty figure of a given size.
        metrics: ``compute_metrics`` output (confusion_matrix, accuracy, f1_macro, mcc, n).
        names: class names.
    """
    import seaborn as sns  # imported here: it pulls in scipy.stats, slow for every ``import mobilenet_lab``

    cm = np.asarray(metrics["confusion_matrix"])
    k = len(cm)
    rows = cm.sum(1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.full(cm.shape, np.nan), where=rows > 0)  # no images: blank row
    side = max(5.5, 0.62 * k + 1.8)
    fig = make((2 * side + 1.2, side))
    annotate = k <= 20  # beyond that the numbers no longer fit in the cells
    for ax, data, fmt, title, bar in zip(
            fig.subplots(1, 2), (cm, normalised), ("d", ".2f"),
            ("Counts (rows: true class)", "Row-normalised: share of each true class (diagonal = recall)"),
            ("test images", "fraction of the true class")):
        sns.heatmap(data, ax=ax, annot=annotate, fmt=fmt, cmap="Blues", square=True, linewidths=0.5,
                    linecolor="white", xticklabels=names, yticklabels=names, cbar_kws={"label": bar, "shrink": 0.8},
                    vmin=0, vmax=1 if fmt != "d" else None, annot_kws={"fontsize": 9 if k <= 10 else 7})
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title)
        ax.tick_params(axis="y", rotation=0)
    fig.suptitle(f"Confusion matrix on {metrics['n']:,} test images: accuracy {metrics['accuracy']:.2%}, "
                 f"F1 macro {metrics['f1_macro']:.4f}, MCC {metrics['mcc']:.4f}")
    return fig


def plot_per_class(make: FigureFactory, metrics: dict, names: list[str], train_counts: list[int] | None) -> Figure:
    """Figure 5: precision, recall and F1 per class, beside the training images per class.

    Args:
        make: creates an empty figure of a given size.
        metrics: ``compute_metrics`` output (per_class, f1_macro, accuracy).
        names: class names.
        train_counts: training images per class, or None when unknown (then one panel only).
    """
    per_class = metrics["per_class"]
    k = len(names)
    x = np.arange(k)
    scores = {what: np.array([per_class[n][what.lower()] for n in names]) for what in ("Precision", "Recall", "F1")}
    width_main = max(8.0, 0.75 * k + 2)
    if train_counts:
        fig = make((width_main + max(5.0, 0.45 * k + 1.5), 5.4))
        ax, ax_counts = fig.subplots(1, 2, width_ratios=[width_main, max(5.0, 0.45 * k + 1.5)])
    else:
        fig = make((width_main, 5.4))
        ax, ax_counts = fig.subplots(), None
    for j, (what, values) in enumerate(scores.items()):
        bars = ax.bar(x + (j - 1) * 0.27, values, width=0.27, label=what, color=f"C{j}")
    # the F1 value over each group, so that a zero-height bar still reads as 0.00
    ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ax.axhline(metrics["f1_macro"], ls=":", color="C2", label=f"F1 macro ({metrics['f1_macro']:.3f})")
    lowest = min(float(v.min()) for v in scores.values())
    # scores near 1 look identical from 0: start the axis just below the lowest score, and say so
    bottom = 0.0 if lowest < 0.5 else np.floor((lowest - 0.05) * 10) / 10
    ax.set_ylim(bottom, 1.0)
    ticks = ax.get_yticks()
    ax.set_ylim(bottom, 1.0 + 0.08 * (1.0 - bottom))  # headroom for the F1 labels; ticks stop at 1
    ax.set_yticks(ticks)
    ax.set_ylabel("score" + (f" (axis starts at {bottom:.1f})" if bottom > 0 else ""))
    ax.set_xticks(x, names)
    ax.set_xlabel("class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, frameon=False)
    title = f"Precision, recall and F1 per class on the test set (accuracy {metrics['accuracy']:.2%})"
    if ax_counts is None:
        title += "\ntraining class counts unavailable (not in the checkpoint and no training split loaded)"
    ax.set_title(title)
    if ax_counts is not None:
        counts = np.asarray(train_counts)
        bars = ax_counts.bar(x, counts, color="0.55")
        ax_counts.bar_label(bars, labels=[f"{c:,}" for c in counts], fontsize=8, padding=2)
        ax_counts.set_xticks(x, names)
        ax_counts.set_xlabel("class")
        ax_counts.set_ylabel("training images")
        ax_counts.margins(y=0.12)
        ratio = f"{counts.max() / counts.min():.1f}×" if counts.min() > 0 else "∞ (a class has none)"
        ax_counts.set_title(f"Training images per class: {counts.sum():,} in all\n"
                            f"imbalance largest / smallest = {ratio}")
    return fig


def _conv_kind(conv: nn.Conv2d) -> str:
    kh, kw = conv.kernel_size
    if conv.groups > 1 and conv.groups == conv.in_channels:
        return f"depthwise {kh}×{kw}, {conv.in_channels} channels"
    return f"{'pointwise ' if (kh, kw) == (1, 1) else ''}{kh}×{kw}, {conv.in_channels}→{conv.out_channels}"


def _first_of(count: int, total: int) -> str:
    return f"all {total}" if count == total else f"first {count} of {total}"


def _mosaic(tiles: np.ndarray) -> np.ndarray:
    """Lay out kernels (rows, cols, kh, kw) as one image with 1-pixel NaN gaps between them."""
    rows, cols, kh, kw = tiles.shape
    image = np.full((rows * (kh + 1) - 1, cols * (kw + 1) - 1), np.nan)
    for r in range(rows):
        for c in range(cols):
            image[r * (kh + 1):r * (kh + 1) + kh, c * (kw + 1):c * (kw + 1) + kw] = tiles[r, c]
    return image


def _draw_filters(fig: Figure, ax, name: str, conv: nn.Conv2d) -> None:
    """One panel of figure 6: the kernels of one convolution layer, in a diverging colour map."""
    weight = conv.weight.detach().float().cpu().numpy()
    out_ch, in_per_group, kh, kw = weight.shape
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")  # the gaps between kernels
    if (kh, kw) == (1, 1):  # a 1x1 kernel is one number per input channel: show the whole matrix
        image = weight[:, :, 0, 0]
        ax.set_xlabel("input channel")
        ax.set_ylabel("output channel (each row is one 1×1 filter)")
        detail = f"all {out_ch}×{in_per_group} weights"
        aspect = "auto"
    elif in_per_group == 1:  # first layer on grayscale input, or depthwise: one kernel per filter
        n = min(out_ch, FILTER_TILES)
        cols = min(8, n)
        tiles = np.full((-(-n // cols) * cols, kh, kw), np.nan)
        tiles[:n] = weight[:n, 0]
        image = _mosaic(tiles.reshape(-1, cols, kh, kw))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"filters 0–{n - 1}" + (f" of {out_ch}" if n < out_ch else "") + f", {cols} per row")
        detail = f"one {kh}×{kw} kernel per filter"
        aspect = "equal"
    else:  # a full convolution: rows are output filters, columns the input channels they read
        rows, cols = min(out_ch, 8), min(in_per_group, 8)
        image = _mosaic(weight[:rows, :cols])
        ax.set_xticks([c * (kw + 1) + (kw - 1) / 2 for c in range(cols)], range(cols))  # tile centres
        ax.set_yticks([r * (kh + 1) + (kh - 1) / 2 for r in range(rows)], range(rows))
        ax.set_xlabel(f"input channel ({_first_of(cols, in_per_group)})")
        ax.set_ylabel(f"output filter ({_first_of(rows, out_ch)})")
        detail = f"{kh}×{kw} kernel per (filter, input channel)"
        aspect = "equal"
    limit = float(np.nanmax(np.abs(image))) or 1.0
    shown = ax.imshow(image, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest", aspect=aspect)
    ax.set_title(f"{name}\n{_conv_kind(conv)}: {detail}")
    fig.colorbar(shown, ax=ax, shrink=0.75, label="weight")


def plot_filters(make: FigureFactory, net: nn.Module) -> Figure:
    """Figure 6: learned filters of the first and the last convolution layers.

    When the last layer is a 1×1 pointwise convolution (a MobileNet block), the depthwise
    3×3 filters just before it are shown too, since 1×1 kernels have no spatial pattern.

    Args:
        make: creates an empty figure of a given size.
        net: the network; its ``blocks`` are searched for ``nn.Conv2d`` layers.
    """
    convs = [(f"blocks.{name}", m) for name, m in net.blocks.named_modules() if isinstance(m, nn.Conv2d)]
    panels = [("first layer: " + convs[0][0], convs[0][1])]
    if len(convs) > 1:
        last_spatial = [c for c in convs if c[1].kernel_size != (1, 1)]
        if convs[-1][1].kernel_size == (1, 1) and last_spatial and last_spatial[-1] is not convs[0]:
            panels.append(("last spatial layer: " + last_spatial[-1][0], last_spatial[-1][1]))
        panels.append(("last layer: " + convs[-1][0], convs[-1][1]))
    fig = make((5.6 * len(panels), 5.8))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (name, conv) in zip(axes, panels):
        _draw_filters(fig, ax, name, conv)
    fig.suptitle("Learned convolution filters (red: positive weights, blue: negative; each layer is followed by "
                 "BatchNorm and ReLU)")
    return fig


def plot_roc(make: FigureFactory, y_true: np.ndarray, probs: np.ndarray, names: list[str], metrics: dict) -> Figure:
    """Figure 7: one-vs-rest ROC curves per class from the softmax probabilities.

    Args:
        make: creates an empty figure of a given size.
        y_true: true classes (N,).
        probs: softmax probabilities (N, K).
        names: class names.
        metrics: ``compute_metrics`` output (its AUCs label the curves).
    """
    curves = roc_curves(y_true, probs, names)
    aucs = metrics.get("roc_auc_per_class") or {}
    fig = make((13.5, 5.8))
    ax_lin, ax_log = fig.subplots(1, 2)
    colors = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"].colors
    lowest_fpr = 1.0 / len(y_true)  # about the smallest step a class's false positive rate can take
    for i, name in enumerate(names):
        if name not in curves:
            continue
        fpr, tpr, auc = curves[name]
        label = f"{name}  (AUC {aucs.get(name, auc):.4f})"
        for ax in (ax_lin, ax_log):
            ax.plot(fpr, tpr, color=colors[i % len(colors)], lw=1.6, label=label if ax is ax_lin else None)
    for ax in (ax_lin, ax_log):
        ax.plot([lowest_fpr, 1], [lowest_fpr, 1], ls="--", color="gray", lw=1,
                label="chance (AUC 0.5)" if ax is ax_lin else None)
        ax.set_xlabel("false positive rate (1 − specificity)")
        ax.set_ylabel("true positive rate (recall)")
        ax.grid(alpha=0.3)
    ax_lin.set_xlim(0, 1)
    ax_lin.set_ylim(0, 1.01)
    ax_lin.set_title("Linear axes")
    ax_log.set_xscale("log")
    ax_log.set_xlim(lowest_fpr, 1)
    ax_log.set_ylim(0, 1.01)
    ax_log.set_title("Zoom: false positive rate on a log scale")
    fig.legend(loc="outside right upper", title="class (one-vs-rest)")
    missing = [n for n in names if n not in curves]
    macro = metrics.get("roc_auc_macro")
    fig.suptitle(f"ROC curves per class on {len(y_true):,} test images"
                 + (f": macro AUC {macro:.4f}" if macro is not None else "")
                 + (f"\nno curve for classes {', '.join(missing)} (no test image, or only that class)"
                    if missing else ""))
    return fig


@torch.inference_mode()
def penultimate_features(net: nn.Module, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """``net.features`` (the pooled input of the fc layer) of ``images``, in eval mode.

    Args:
        net: the network (needs a ``features`` method).
        images: uint8 (N, C, H, W).
        batch_size: images per forward pass.
    """
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    chunks = [net.features(images[i:i + batch_size].to(device)).float().cpu()
              for i in range(0, len(images), batch_size)]
    net.train(was_training)
    return torch.cat(chunks).numpy()


def plot_tsne(make: FigureFactory, net: nn.Module, images: torch.Tensor, y_true: np.ndarray, y_pred: np.ndarray,
              names: list[str], samples: int = 2000, seed: int = 0) -> Figure:
    """Figure 8: t-SNE map of the penultimate-layer features of a random test subsample.

    Args:
        make: creates an empty figure of a given size.
        net: the network.
        images: test images, uint8 (N, C, H, W).
        y_true, y_pred: true and predicted classes (N,).
        names: class names.
        samples: images embedded (t-SNE is quadratic-ish: a subsample keeps it to seconds).
        seed: picks the subsample and seeds t-SNE.
    """
    n = min(samples, len(y_true))
    fig = make((10.5, 8))
    ax = fig.subplots()
    if n < 10:
        _placeholder(ax, f"t-SNE needs at least 10 images; {n} available")
        fig.suptitle("t-SNE of penultimate-layer features: not drawn")
        return fig
    from sklearn.decomposition import PCA  # imported here: only this figure needs them
    from sklearn.manifold import TSNE

    chosen = np.sort(np.random.default_rng(seed).choice(len(y_true), n, replace=False))
    features = penultimate_features(net, images[chosen])
    dims = f"{features.shape[1]} dims"
    if features.shape[1] > min(50, n):  # the usual PCA step first: much faster t-SNE, same picture
        features = PCA(min(50, n), random_state=seed).fit_transform(features)
        dims += f", PCA to {features.shape[1]}"
    # 500 iterations instead of 1000: the map of a few thousand points is settled by then, in half the time
    # (the argument is n_iter before scikit-learn 1.5, which requirements.txt still allows)
    iterations = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"
    embedded = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", learning_rate="auto", random_state=seed,
                    **{iterations: 500}).fit_transform(features)
    truth, guess = y_true[chosen], y_pred[chosen]
    size = float(np.clip(18000 / n, 9, 40))  # bigger dots when there are few
    colors = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"].colors
    for c, name in enumerate(names):
        points = embedded[truth == c]
        if len(points) == 0:
            continue
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.7, color=colors[c % len(colors)], label=name,
                   linewidths=0)
        cx, cy = np.median(points, axis=0)
        ax.text(cx, cy, name, fontsize=15, weight="bold", ha="center", va="center", color=colors[c % len(colors)],
                path_effects=[patheffects.withStroke(linewidth=3, foreground="white")])
    wrong = truth != guess
    if wrong.any():  # rings, not crosses: the class colour of a misclassified point stays visible inside
        ax.scatter(embedded[wrong, 0], embedded[wrong, 1], s=size * 3.5, marker="o", facecolors="none",
                   edgecolors="black", linewidths=0.7, label=f"misclassified ({int(wrong.sum())})")
    ax.set_xlabel("t-SNE dimension 1")
    ax.set_ylabel("t-SNE dimension 2")
    ax.set_xticks([])
    ax.set_yticks([])
    legend = ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), title="true class", frameon=False)
    for handle in legend.legend_handles:  # one legible marker size whatever the dot size
        handle.set_sizes([45])
    subset = "all" if n == len(y_true) else "a random subsample of"
    fig.suptitle(f"t-SNE of the penultimate-layer features (global-average-pooled, {dims})\n"
                 f"{n:,} test images: {subset} {len(y_true):,}, coloured by true class; rings: misclassified")
    return fig


def plot_gradcam(make: FigureFactory, net: nn.Module, images: torch.Tensor, y_true: np.ndarray, y_pred: np.ndarray,
                 probs: np.ndarray, names: list[str], correct: np.ndarray, wrong: np.ndarray) -> Figure:
    """Figure 9: Grad-CAM heatmaps over the correct and wrong predictions of figure 3.

    Rows: correct predictions; wrong ones explained for the predicted class (what the model
    saw); the same wrong ones explained for the true class (what it would have needed).

    Args:
        make: creates an empty figure of a given size.
        net: the network (Grad-CAM on its last block, ``net.blocks[-1]``).
        images: test images, uint8 (N, C, H, W).
        y_true, y_pred: true and predicted classes (N,).
        probs: softmax probabilities (N, K).
        names: class names.
        correct, wrong: indices to show (from :func:`pick_examples`).
    """
    n = len(y_true)
    rows = [("correct:\nmap for the predicted\n(= true) class", CORRECT_COLOR, correct),
            ("wrong:\nmap for the\npredicted class", WRONG_COLOR, wrong),
            ("wrong (the same):\nmap for the\ntrue class", WRONG_COLOR, wrong)]
    explained = [y_pred, y_pred, y_true]  # the class each row's maps are for
    fig, axes, kept = _example_rows(make, rows)
    was_training = net.training
    net.eval()  # a forward pass in training mode would update BatchNorm's running statistics
    with torch.no_grad():
        map_size = tuple(net.blocks(net.input(images[:1].to(next(net.parameters()).device))).shape[-2:])
    net.train(was_training)
    for row_axes, k in zip(axes, kept):
        picked = rows[k][2]
        cams = grad_cam(net, images[picked], torch.as_tensor(explained[k][picked])).numpy()
        for ax, i, cam in zip(row_axes, picked, cams):
            _show_image(ax, images[i])
            shown = ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
            ax.set_title(_label(names, y_true[i], y_pred[i], probs[i, y_pred[i]]), fontsize=9,
                         color=CORRECT_COLOR if y_true[i] == y_pred[i] else WRONG_COLOR)
            if cam.max() == 0:  # an all-dark panel would look like a bug: say what it means
                ax.text(0.5, 0.06, "empty map: nothing in the image\nspeaks for this class", color="white",
                        fontsize=8, ha="center", va="bottom", transform=ax.transAxes)
    fig.colorbar(shown, ax=axes, shrink=0.9 if len(kept) == 1 else 0.5, label="Grad-CAM: importance for the class")
    missing = [what for what, picked in (("correct", correct), ("wrong", wrong)) if len(picked) == 0]
    fig.suptitle(f"Grad-CAM on the last block's output (blocks[-1], {map_size[0]}×{map_size[1]} map, upsampled "
                 f"to {images.shape[-2]}×{images.shape[-1]})"
                 + "".join(f"\nno {what} predictions among the {n:,} test images" for what in missing))
    return fig
