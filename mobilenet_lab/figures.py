"""The assignment's visualize step: :func:`visualize` writes 01_curves.png ... 10_activations.png (one
``plot_*`` function each). The plotters take arrays, so the report draws the same figures from stored
results; the ``*_data`` functions compute those arrays from a network. Figures use the Agg canvas unless
``show=True`` finds a display."""
import os
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import seaborn as sns
import torch
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from torch import nn

from .errors import UserError, note
from .gradcam import grad_cam
from .metrics import compute_metrics, roc_curves
from .model import ConvDw

DPI = 150
EXAMPLES = 4          # correct and wrong predictions shown in figures 3 and 9
SAMPLE_GRID = 24      # test images in figure 2
FILTER_TILES = 48     # kernels shown per filter panel
MAPS_SHOWN = 8        # feature maps per block in figure 10
# Sizes and type chosen for a page about 7 inches wide: no text below 7 pt when set at full width.
STYLE = {"font.size": 9, "axes.titlesize": 9.5, "figure.titlesize": 10.5, "legend.fontsize": 8,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False}
CORRECT_COLOR, WRONG_COLOR = "#1a7f37", "#c62828"
FigureFactory = Callable[[tuple[float, float]], Figure]


def visualize(net: nn.Module, history: dict | None, test_set, pred, out_dir: str | Path, metrics: dict | None = None,
              train_counts: list[int] | None = None, class_names: list[str] | None = None, show: bool = False,
              tsne_samples: int = 2000) -> list[Path]:
    """Save the ten figures as PNGs in ``out_dir``; return their paths."""
    images, y_true = test_set.images, test_set.labels.numpy().astype(int)
    y_pred, probs = pred.labels.numpy().astype(int), pred.probs.float().numpy()
    if len(y_true) == 0:
        raise UserError("nothing to visualize: the test set is empty (check --test-size)")
    names = list(class_names or [str(i) for i in range(probs.shape[1])])
    metrics = metrics or compute_metrics(y_true, y_pred, probs, names)
    correct, wrong = pick_examples(y_true, y_pred, probs)
    draws = {
        "01_curves": lambda make: plot_curves(make, history or {}),
        "02_samples": lambda make: plot_samples(make, images, y_true, y_pred, probs, names),
        "03_predictions": lambda make: plot_predictions(make, images, y_true, y_pred, probs, names, correct, wrong),
        "04_confusion_matrix": lambda make: plot_confusion(make, metrics, names),
        "05_per_class": lambda make: plot_per_class(make, metrics, names, train_counts),
        "06_filters": lambda make: plot_filters(make, filter_data(net)),
        "07_roc": lambda make: plot_roc(make, roc_curves(y_true, probs, names), len(y_true)),
        "08_tsne": lambda make: plot_tsne(make, **tsne_data(net, images, y_true, y_pred, tsne_samples), names=names),
        "09_gradcam": lambda make: plot_gradcam(make, images, y_true, y_pred, probs, names,
                                                gradcam_data(net, images, y_true, y_pred, correct, wrong)),
        "10_activations": lambda make: plot_activations(make, activation_data(net, images[:1])),
    }
    interactive = show and _interactive_backend()
    make, out_dir, paths = _figure_factory(interactive), Path(out_dir), []
    out_dir.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        for name, draw in draws.items():
            draw(make).savefig(out_dir / f"{name}.png", dpi=DPI, facecolor="white")
            paths.append(out_dir / f"{name}.png")
    if interactive:
        import matplotlib.pyplot as plt  # only here: picking a window backend needs the display
        plt.show()
        plt.close("all")
    return paths


def _interactive_backend() -> bool:
    """Whether figures can be opened in windows; says why not when they cannot."""
    if not (sys.platform in ("win32", "darwin") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        note("--show: no display found (DISPLAY/WAYLAND_DISPLAY unset); the figures are only saved")
        return False
    if matplotlib.get_backend().lower() in ("agg", "pdf", "ps", "svg", "cairo", "template"):
        note(f"--show: matplotlib has no window backend here ({matplotlib.get_backend()}); the figures are only saved")
        return False
    return True


def _figure_factory(interactive: bool) -> FigureFactory:
    """Figures through pyplot (windows) when interactive, else plain Agg ``Figure`` objects (no global state)."""
    if interactive:
        import matplotlib.pyplot as plt
        return lambda size: plt.figure(figsize=size, layout="constrained")
    return lambda size: Figure(figsize=size, layout="constrained")


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
    ax.imshow(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
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
    fig = make((7.5, 3.2))
    best = history.get("best_epoch")
    kept = history.get("kept_epoch") or best
    for ax, key, what in zip(fig.subplots(1, 2), ("loss", "acc"), ("Loss", "Accuracy")):
        ax.plot(epochs, history[f"train_{key}"], "o-", ms=3, label="training", color="C0")
        ax.plot(epochs, history[f"val_{key}"], "s-", ms=3, label="validation", color="C1")
        if best:
            ax.axvline(best, ls="--", color="gray",
                       label=f"best validation epoch ({best}{', weights kept' if kept == best else ''})")
        if kept and kept != best:
            ax.axvline(kept, ls=":", color="black", label=f"weights kept (epoch {kept})")
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
    fig.suptitle(f"Correct and wrong predictions on the {len(y_true):,} test images (confidence: softmax "
                 f"probability of the predicted class)" + _missing(correct, wrong, len(y_true)))
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


def plot_per_class(make: FigureFactory, metrics: dict, names: list[str], train_counts: list[int] | None) -> Figure:
    """Figure 5: precision, recall and F1 per class, beside the training images per class."""
    x = np.arange(len(names))
    scores = {w: np.array([metrics["per_class"][n][w.lower()] for n in names]) for w in ("Precision", "Recall", "F1")}
    fig = make((7.5, 3.2))
    ax, ax_counts = fig.subplots(1, 2, width_ratios=[3, 2]) if train_counts else (fig.subplots(), None)
    for j, (what, values) in enumerate(scores.items()):
        bars = ax.bar(x + (j - 1) * 0.27, values, width=0.27, label=what, color=f"C{j}")
    ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1, rotation=90)
    lowest = min(float(v.min()) for v in scores.values())
    bottom = 0.0 if lowest < 0.5 else np.floor((lowest - 0.02) * 50) / 50  # scores near 1 look alike from 0
    ax.set(ylim=(bottom, 1.0 + 0.12 * (1.0 - bottom)), xlabel="class",
           ylabel="score" + (f" (axis starts at {bottom:.2f})" if bottom > 0 else ""))
    ax.set_xticks(x, names)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", ncol=3)
    ax.set_title(f"Per class on the test set (F1 macro {metrics['f1_macro']:.4f})"
                 + ("" if train_counts else "\ntraining class counts unavailable (not in the checkpoint)"))
    if ax_counts is not None:
        counts = np.asarray(train_counts)
        ax_counts.bar_label(ax_counts.bar(x, counts, color="0.55"), labels=[f"{c:,}" for c in counts], fontsize=6,
                            padding=1, rotation=90)
        ax_counts.set_xticks(x, names)
        ax_counts.set(xlabel="class")
        ax_counts.margins(y=0.2)
        ratio = f"{counts.max() / counts.min():.1f}×" if counts.min() > 0 else "∞ (a class has none)"
        ax_counts.set_title(f"Training images per class ({counts.sum():,})\nlargest / smallest = {ratio}")
    return fig


def filter_data(net: nn.Module) -> list[tuple[str, np.ndarray]]:
    """(title, kernels (rows, cols, 3, 3)) panels: the first layer's kernels, and the last ConvDw block's depthwise
    kernels or, without ConvDw blocks, a few output filters of the last convolution."""
    convs = [m for m in net.blocks.modules() if isinstance(m, nn.Conv2d)]
    first = convs[0].weight.detach().float().cpu().numpy()
    panels = [(f"first layer: {first.shape[0]} filters of {first.shape[2]}×{first.shape[3]}"
               + ("" if first.shape[1] == 1 else f" (input channel 0 of {first.shape[1]})"),
               _grid(first[:FILTER_TILES, 0]))]
    dw = [b.depthwise for b in net.blocks if isinstance(b, ConvDw)]
    if dw:
        w = dw[-1].weight.detach().float().cpu().numpy()
        panels.append((f"last ConvDw block: depthwise 3×3 filters ({min(len(w), FILTER_TILES)} of {len(w)} channels)",
                       _grid(w[:FILTER_TILES, 0])))
    elif len(convs) > 1:
        w = convs[-1].weight.detach().float().cpu().numpy()
        panels.append((f"last conv layer: 6 of its {w.shape[0]} filters (rows) × their first 8 of "
                       f"{w.shape[1]} input channels", w[:6, :8]))
    return panels


def _grid(kernels: np.ndarray, cols: int = 8) -> np.ndarray:
    tiles = np.full((-(-len(kernels) // cols) * cols, *kernels.shape[1:]), np.nan)
    tiles[:len(kernels)] = kernels
    return tiles.reshape(-1, cols, *kernels.shape[1:])


def plot_filters(make: FigureFactory, panels: list[tuple[str, np.ndarray]]) -> Figure:
    """Figure 6: kernels as tiles in a diverging colour map (red positive, blue negative)."""
    fig = make((7.5, 3.0))
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")  # the gaps between kernels
    for ax, (title, tiles) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        rows, cols, kh, kw = tiles.shape
        image = np.full((rows * (kh + 1) - 1, cols * (kw + 1) - 1), np.nan)
        for r in range(rows):
            for c in range(cols):
                image[r * (kh + 1):r * (kh + 1) + kh, c * (kw + 1):c * (kw + 1) + kw] = tiles[r, c]
        limit = float(np.nanmax(np.abs(image))) or 1.0
        shown = ax.imshow(image, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set(xticks=[], yticks=[])
        ax.set_title(title, wrap=True)
        fig.colorbar(shown, ax=ax, shrink=0.6, label="weight")
    fig.suptitle("Learned 3×3 filters (each layer is followed by batch norm and ReLU)")
    return fig


def draw_roc(ax, curves: dict[str, tuple], n: int, title: str = "ROC curves, zoomed into the corner") -> None:
    """One-vs-rest ROC curves with a log false-positive axis: on a linear one they all hug the corner."""
    colors = matplotlib.colormaps["tab10" if len(curves) <= 10 else "tab20"].colors
    lowest = 1.0 / max(n, 2)  # about the smallest step a class's false-positive rate can take
    for i, (name, (fpr, tpr, _)) in enumerate(curves.items()):
        ax.plot(np.maximum(fpr, lowest), tpr, color=colors[i % len(colors)], lw=1.2, label=name)
    at_one_percent = [float(np.interp(0.01, fpr, tpr)) for fpr, tpr, _ in curves.values()]
    ax.set(xscale="log", xlim=(lowest, 1), ylim=(max(0.0, min(at_one_percent, default=0.0) - 0.02), 1.002),
           xlabel="false positive rate (log scale)", ylabel="true positive rate (recall)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="class", ncol=2, loc="lower right")


def plot_roc(make: FigureFactory, curves: dict[str, tuple], n: int) -> Figure:
    """Figure 7: ROC curves per class (log scale), and 1 - AUC per class, the part of the area each misses."""
    fig = make((7.5, 3.4))
    ax, ax_bar = fig.subplots(1, 2, width_ratios=[3, 2])
    draw_roc(ax, curves, n)
    colors = matplotlib.colormaps["tab10" if len(curves) <= 10 else "tab20"].colors
    misses = [1 - auc for _, _, auc in curves.values()]
    ax_bar.bar(list(curves), misses, color=[colors[i % len(colors)] for i in range(len(curves))])
    ax_bar.set(xlabel="class", ylabel="1 − AUC",
               title=f"1 − AUC per class\n(macro AUC {1 - np.mean(misses):.5f})" if misses else "no curves")
    ax_bar.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    fig.suptitle(f"ROC curves per class on {n:,} test images, from the softmax probabilities")
    return fig


@torch.inference_mode()
def tsne_data(net: nn.Module, images: torch.Tensor, y_true: np.ndarray, y_pred: np.ndarray, samples: int = 2000,
              seed: int = 0) -> dict:
    """2-D t-SNE points of the penultimate-layer features of a random subsample of ``images``."""
    n = min(samples, len(y_true))
    chosen = np.sort(np.random.default_rng(seed).choice(len(y_true), n, replace=False))
    net.eval()
    device = next(net.parameters()).device
    features = torch.cat([net.features(images[chosen[i:i + 500]].to(device)).float().cpu()
                          for i in range(0, n, 500)]).numpy() if n else np.zeros((0, 1))
    dims = f"{features.shape[1]} dims"
    if n < 10:
        return {"points": np.zeros((n, 2)), "truth": y_true[chosen], "guess": y_pred[chosen], "dims": dims, "total": len(y_true)}
    if features.shape[1] > min(50, n):  # the usual PCA step first: much faster, the same picture
        features = PCA(min(50, n), random_state=seed).fit_transform(features)
        dims += f", PCA to {features.shape[1]}"
    points = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", learning_rate="auto", random_state=seed,
                  max_iter=500).fit_transform(features)  # 500 iterations: a few thousand points have settled
    return {"points": points, "truth": y_true[chosen], "guess": y_pred[chosen], "dims": dims, "total": len(y_true)}


def draw_tsne(ax, points: np.ndarray, truth: np.ndarray, guess: np.ndarray, names: list[str],
              legend: bool = True) -> None:
    """A t-SNE map coloured by true class, each class named at its median; rings mark the misclassified."""
    size = float(np.clip(12000 / len(points), 4, 30))
    colors = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"].colors
    for c, name in enumerate(names):
        at = points[truth == c]
        if len(at):
            ax.scatter(at[:, 0], at[:, 1], s=size, alpha=0.7, color=colors[c % len(colors)], label=name, linewidths=0)
            ax.text(*np.median(at, axis=0), name, fontsize=11, weight="bold", ha="center", va="center",
                    color=colors[c % len(colors)], path_effects=[patheffects.withStroke(linewidth=3, foreground="white")])
    wrong = truth != guess
    if wrong.any():  # rings, not crosses: the class colour of a misclassified point stays visible inside
        ax.scatter(points[wrong, 0], points[wrong, 1], s=size * 4, facecolors="none", edgecolors="black",
                   linewidths=0.7, label=f"misclassified ({int(wrong.sum())})")
    ax.set(xticks=[], yticks=[])
    if legend:
        handles = ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), title="true class", frameon=False)
        for handle in handles.legend_handles:
            handle.set_sizes([30])


def plot_tsne(make: FigureFactory, points: np.ndarray, truth: np.ndarray, guess: np.ndarray, dims: str, total: int,
              names: list[str]) -> Figure:
    """Figure 8: t-SNE map of the penultimate-layer features of a test subsample."""
    n = len(points)
    if n < 10:
        fig = _placeholder(make((7.0, 2.0)), f"t-SNE needs at least 10 images; {n} available")
        fig.suptitle("t-SNE of penultimate-layer features: not drawn")
        return fig
    fig = make((7.0, 5.4))
    ax = fig.subplots()
    draw_tsne(ax, points, truth, guess, names)
    ax.set(xlabel="t-SNE dimension 1", ylabel="t-SNE dimension 2")
    subset = "all" if n == total else "a random subsample of"
    fig.suptitle(f"t-SNE of the penultimate-layer features (global-average-pooled, {dims}): {n:,} test images, "
                 f"{subset} {total:,}")
    return fig


def gradcam_data(net: nn.Module, images, y_true, y_pred, correct, wrong) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """Rows of (label, colour, image indices, Grad-CAM maps on the last block): correct predictions, wrong ones
    explained for the predicted class (what the model saw) and for the true class (what it needed)."""
    rows = [("correct: map for the\npredicted (true) class", CORRECT_COLOR, correct, y_pred),
            ("wrong: map for the\npredicted class", WRONG_COLOR, wrong, y_pred),
            ("wrong: map for the\ntrue class", WRONG_COLOR, wrong, y_true)]
    return [(label, color, idx, grad_cam(net, images[idx], torch.as_tensor(target[idx])).numpy() if len(idx)
             else np.zeros((0, *images.shape[-2:]))) for label, color, idx, target in rows]


def plot_gradcam(make: FigureFactory, images, y_true, y_pred, probs, names, rows) -> Figure:
    """Figure 9: Grad-CAM heatmaps (where the last block found evidence for a class) over the examples."""
    fig, axes, kept = _example_rows(make, [(label, color, idx) for label, color, idx, _ in rows])
    shown = None
    for row_axes, k in zip(axes, kept):
        _, _, picked, cams = rows[k]
        for ax, i, cam in zip(row_axes, picked, cams):
            _show_image(ax, images[i])
            shown = ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
            ax.set_title(_label(names, y_true[i], y_pred[i], probs[i, y_pred[i]]), fontsize=8,
                         color=CORRECT_COLOR if y_true[i] == y_pred[i] else WRONG_COLOR)
            if cam.max() == 0:  # an all-dark panel would look like a bug: say what it means
                ax.text(0.5, 0.06, "empty map: nothing here\nspeaks for this class", color="white", fontsize=7,
                        ha="center", va="bottom", transform=ax.transAxes)
    if shown is not None:
        fig.colorbar(shown, ax=axes, shrink=0.5, label="importance for the class")
    fig.suptitle("Grad-CAM on the last block's feature map, upsampled to the image"
                 + _missing(rows[0][2], rows[1][2], len(y_true)))
    return fig


@torch.no_grad()
def activation_data(net: nn.Module, image: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """(title, the first MAPS_SHOWN feature maps) of one image (1, C, H, W) after each block, and the image."""
    net.eval()
    x = net.input(image.to(next(net.parameters()).device))
    layers = [("input", image[0].float().numpy())]
    for i, block in enumerate(net.blocks):
        x = block(x)
        kind = "ConvDw" if isinstance(block, ConvDw) else "conv"
        layers.append((f"block {i + 1} ({kind}), {x.shape[1]} maps of {x.shape[2]}×{x.shape[3]}",
                       x[0, :MAPS_SHOWN].float().cpu().numpy()))
    return layers


def plot_activations(make: FigureFactory, layers: list[tuple[str, np.ndarray]]) -> Figure:
    """Figure 10: one digit, and the first feature maps after every block (brighter: stronger response)."""
    fig = make((7.5, 0.9 * len(layers) + 0.6))
    axes = fig.subplots(len(layers), MAPS_SHOWN, squeeze=False)
    for row, (title, maps) in zip(axes, layers):
        for j, ax in enumerate(row):
            ax.set_axis_off()
            if j < len(maps):
                ax.imshow(maps[j], cmap="gray" if title == "input" else "magma", interpolation="nearest")
        row[0].set_title(title, loc="left", fontsize=7.5)
    fig.suptitle("One test digit through the network: the first feature maps after each block")
    return fig
