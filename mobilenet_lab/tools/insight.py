"""Figures that look inside a trained network, beyond the assignment's visualize step: precision, recall and F1 per
class, the filters of its last convolution layer, ROC curves, a t-SNE map of its pooled features, Grad-CAM (Selvaraju et al. 2017) over correct and
wrong predictions, and one digit's feature maps after every block. ``python -m mobilenet_lab explain --figures`` writes
them for a saved model; the report draws them for its main networks.

Grad-CAM is a short hook-based implementation rather than the ``grad-cam`` package: that package pulls in OpenCV and
several other dependencies for what is about twenty lines of autograd here. For a layer with activations A (channels k,
map u x v) and a class score y_c, the map is ReLU(sum_k w_k A_k) with w_k the spatial mean of dy_c/dA_k, upsampled
bilinearly to the input size and scaled to [0, 1] per image."""
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import patheffects
from matplotlib.figure import Figure
from sklearn import metrics as skm
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from torch import nn
from torchvision.utils import make_grid

from ..evaluation import eval_mode
from ..figures import CORRECT_COLOR, WRONG_COLOR, FigureFactory, _example_rows, _label, _missing, _placeholder, _show_image
from ..metrics import _np
from ..model import ConvDw

MAPS_SHOWN = 8        # feature maps per block in the activations figure
NEIGHBOURS = 5        # the t-SNE figure's number: how often a digit's nearest pooled features share its class


def plot_per_class(make: FigureFactory, metrics: dict, names: list[str], train_counts: list[int] | None) -> Figure:
    """Precision, recall and F1 per class, beside the training images per class."""
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


def filter_data(net: nn.Module) -> list[tuple[str, str, np.ndarray]]:
    """The last convolution layer's weights as (title, kind, array) panels; kind "kernels" is a stack of 3x3 kernels,
    "matrix" an out x in matrix. After a ConvDw block, the last convolution is its 1x1 pointwise layer: its weight
    matrix, beside the block's depthwise 3x3 filters. After a conv block, whose filters hold one 3x3 kernel per input
    channel: each filter's strongest kernel (largest L2 norm), beside the norm of every kernel."""
    last = net.blocks[-1]
    if isinstance(last, ConvDw):
        depthwise = last.depthwise.weight.detach().float().cpu()[:, 0]
        pointwise = last.pointwise.weight.detach().float().cpu()[:, :, 0, 0]
        return [(f"last ConvDw block: its {len(depthwise)} depthwise 3×3 filters", "kernels", depthwise.numpy()),
                (f"its pointwise 1×1 convolution (the last layer): {pointwise.shape[0]} filters × "
                 f"{pointwise.shape[1]} input channels", "matrix", pointwise.numpy())]
    weight = last[0].weight.detach().float().cpu()
    norms = weight.flatten(2).norm(dim=2)
    strongest = weight[torch.arange(len(weight)), norms.argmax(1)]
    return [(f"last conv layer: the strongest of the {weight.shape[1]} 3×3 kernels of each of its {weight.shape[0]} "
             f"filters", "kernels", strongest.numpy()),
            (f"L2 norm of each of its {weight.shape[0]} × {weight.shape[1]} kernels", "matrix", norms.numpy())]


def plot_filters(make: FigureFactory, panels: list[tuple[str, str, np.ndarray]]) -> Figure:
    """The last convolution layer: kernels as tiles and weight matrices as heatmaps, red positive and blue
    negative (norms in one colour)."""
    fig = make((7.5, 3.6))
    for ax, (title, kind, array) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        if kind == "kernels":  # tiles one pixel apart, on a white background (NaN)
            cols = int(np.ceil(np.sqrt(len(array))))
            array = make_grid(torch.as_tensor(array)[:, None], nrow=cols, padding=1, pad_value=float("nan"))[0].numpy()
        limit = float(np.nanmax(np.abs(array))) or 1.0
        signed = np.nanmin(array) < 0
        cmap = matplotlib.colormaps["RdBu_r" if signed else "viridis"].with_extremes(bad="white")
        shown = ax.imshow(array, cmap=cmap, vmin=-limit if signed else 0, vmax=limit, interpolation="nearest")
        if kind == "kernels":
            ax.set(xticks=[], yticks=[])
        else:
            ax.set(xlabel="input channel", ylabel="filter (output channel)")
        ax.set_title(title, wrap=True)
        fig.colorbar(shown, ax=ax, shrink=0.6, label="weight" if signed else "kernel norm")
    fig.suptitle("Learned filters of the last convolution layer (followed by batch norm and ReLU)")
    return fig


def roc_curves(y_true, probs, class_names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """One-vs-rest ROC curves from the probabilities: {class: (false positive rates, true positive rates, AUC)}, leaving
    out classes with no positive or no negative image."""
    y_true, probs = _np(y_true).astype(int), _np(probs)
    curves = {}
    for i, name in enumerate(class_names):
        if 0 < (y_true == i).sum() < len(y_true):
            fpr, tpr, _ = skm.roc_curve(y_true == i, probs[:, i])
            curves[name] = (fpr, tpr, float(skm.auc(fpr, tpr)))
    return curves


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
    """ROC curves per class (log scale), and 1 - AUC per class, the part of the area each misses."""
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
    """2-D t-SNE points of the pooled features (what the fc layer sees) of a random subsample of ``images``, and how
    well those features separate the classes: the accuracy of a NEIGHBOURS-nearest-neighbour vote (5-fold)."""
    n = min(samples, len(y_true))
    chosen = np.sort(np.random.default_rng(seed).choice(len(y_true), n, replace=False))
    truth, device = y_true[chosen], next(net.parameters()).device
    with eval_mode(net):
        features = torch.cat([net.features(images[chosen[i:i + 500]].to(device)).float().cpu()
                              for i in range(0, n, 500)]).numpy() if n else np.zeros((0, 1))
    found = {"points": np.zeros((n, 2)), "truth": truth, "guess": y_pred[chosen], "dims": f"{features.shape[1]} dims",
             "total": len(y_true), "knn": None}
    if n < 10:
        return found
    if np.bincount(truth).max() >= 5 and min(np.bincount(truth)[np.unique(truth)]) >= 5:
        found["knn"] = float(cross_val_score(KNeighborsClassifier(NEIGHBOURS), features, truth, cv=5).mean())
    if features.shape[1] > min(50, n):  # the usual PCA step first: much faster, the same picture
        features = PCA(min(50, n), random_state=seed).fit_transform(features)
        found["dims"] += f", PCA to {features.shape[1]}"
    found["points"] = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", learning_rate="auto", random_state=seed,
                           max_iter=500).fit_transform(features)  # 500 iterations: a few thousand points have settled
    return found


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
              names: list[str], knn: float | None = None) -> Figure:
    """A t-SNE map of the pooled features of a test subsample, with their nearest-neighbour accuracy."""
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
    score = "" if knn is None else f"\n{NEIGHBOURS}-nearest-neighbour accuracy of these features: {knn:.2%}"
    fig.suptitle(f"t-SNE of the pooled features the fc layer sees ({dims}): {n:,} test images, {subset} "
                 f"{total:,}{score}")
    return fig
def grad_cam(net: nn.Module, images: torch.Tensor, target_classes: torch.Tensor | None = None,
             layer: nn.Module | None = None, *, batch_size: int = 256) -> torch.Tensor:
    """Grad-CAM heatmaps of ``images`` for ``target_classes``.

    ``images`` are uint8 (N, C, H, W) or floats in [0, 1]; ``target_classes`` None explains the predicted
    class; ``layer`` defaults to the last block (the last map before global average pooling). Returns
    (N, H, W) maps on the CPU, each scaled to [0, 1]. The network runs in eval mode and is left in the
    mode it was in; no parameter gradients are written (``torch.autograd.grad`` w.r.t. the activations)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("grad_cam needs gradients: call it outside torch.inference_mode()")
    layer = layer if layer is not None else net.blocks[-1]
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    maps = []
    try:
        # enable_grad: callers often sit inside no_grad (inference_mode cannot be undone, though)
        with torch.enable_grad():
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size].to(device)
                # new tensors (never the caller's, which may come from inference mode); requires_grad
                # so that the activations need grad even if the weights are frozen
                x = batch.float().div(255.0) if batch.dtype == torch.uint8 else batch.float().clone()
                x.requires_grad_(True)
                captured.clear()
                logits = net(x)
                if target_classes is None:
                    targets = logits.argmax(1)
                else:
                    targets = torch.as_tensor(target_classes[start:start + batch_size]).to(device).long().clone()
                score = logits.gather(1, targets[:, None]).sum()
                activations = captured[-1]
                grads, = torch.autograd.grad(score, activations)
                weights = grads.mean(dim=(2, 3), keepdim=True)
                cam = F.relu((weights * activations).sum(1, keepdim=True)).detach()
                cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                peak = cam.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
                maps.append((cam / peak).clamp(0, 1).cpu())
    finally:
        handle.remove()
        net.train(was_training)
    if not maps:
        return torch.empty((0, *images.shape[-2:]))
    return torch.cat(maps)


def gradcam_data(net: nn.Module, images, y_true, y_pred, correct, wrong) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """Rows of (label, colour, image indices, Grad-CAM maps on the last block): correct predictions, wrong ones
    explained for the predicted class (what the model saw) and for the true class (what it needed)."""
    rows = [("correct: map for the\npredicted (true) class", CORRECT_COLOR, correct, y_pred),
            ("wrong: map for the\npredicted class", WRONG_COLOR, wrong, y_pred),
            ("wrong: map for the\ntrue class", WRONG_COLOR, wrong, y_true)]
    return [(label, color, idx, grad_cam(net, images[idx], torch.as_tensor(target[idx])).numpy() if len(idx)
             else np.zeros((0, *images.shape[-2:]))) for label, color, idx, target in rows]


def plot_gradcam(make: FigureFactory, images, y_true, y_pred, probs, names, rows) -> Figure:
    """Grad-CAM heatmaps (where the last block found evidence for a class) over the examples."""
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
    layers = [("input", image[0].float().numpy())]
    with eval_mode(net):
        x = net.input(image.to(next(net.parameters()).device))
        for i, block in enumerate(net.blocks):
            x = block(x)
            kind = "ConvDw" if isinstance(block, ConvDw) else "conv"
            layers.append((f"block {i + 1} ({kind}), {x.shape[1]} maps of {x.shape[2]}×{x.shape[3]}",
                           x[0, :MAPS_SHOWN].float().cpu().numpy()))
    return layers


def plot_activations(make: FigureFactory, layers: list[tuple[str, np.ndarray]]) -> Figure:
    """One digit, and the first feature maps after every block (brighter: stronger response)."""
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
