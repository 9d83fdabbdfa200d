"""Predicting on pictures of any size and colour: the MNIST-style conversion and the predict command.

Also home of the trained-model fixtures that test_demo.py and test_submit.py import.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from helpers import digits
from mobilenet_lab.errors import UserError
from mobilenet_lab.tools.predict import CAM_SUFFIX, Classifier, main
from mobilenet_lab.tools.preprocess import mnist_style, read_image

HELD_OUT = 500  # digits()[:HELD_OUT] are never trained on


# ---------------------------------------------------------------------------------------------
# Models (session-wide; the files are kept in the session's temp folder so that the modules
# importing these fixtures do not train again).
# ---------------------------------------------------------------------------------------------
def _model_file(tmp_path_factory, name: str) -> Path:
    folder = tmp_path_factory.getbasetemp() / "viva-models"
    folder.mkdir(exist_ok=True)
    return folder / name


@pytest.fixture(scope="session")
def untrained_model(tmp_path_factory) -> Path:
    """A saved, untrained 1 conv + 2 ConvDw network (for shapes and API tests)."""
    from mobilenet_lab.checkpoint import save
    from mobilenet_lab.model import init_network
    path = _model_file(tmp_path_factory, "untrained.pt")
    if not path.exists():
        torch.manual_seed(0)
        save(init_network(1, 2, device="cpu"), path)
    return path


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A 1 conv + 2 ConvDw network trained 2 epochs on 4,000 sample digits (about 90% accurate)."""
    from mobilenet_lab.checkpoint import save
    from mobilenet_lab.config import Config
    from mobilenet_lab.model import init_network
    from mobilenet_lab.training import train
    path = _model_file(tmp_path_factory, "trained.pt")
    if not path.exists():
        x, y = digits()
        x, y = torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)
        torch.manual_seed(0)
        net = train(init_network(1, 2, device="cpu"), x[1000:], y[1000:], x[HELD_OUT:1000], y[HELD_OUT:1000], 0.02,
                    2, "balanced-softmax", "adamw", Config(batch_size=64, augment=False))
        save(net, path)
    return path


# ---------------------------------------------------------------------------------------------
# Pictures of a real MNIST digit, the way people give them.
# ---------------------------------------------------------------------------------------------
def jpeg(img: Image.Image, quality: int = 80) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def render(digit: np.ndarray, kind: str, seed: int = 0) -> Image.Image:
    """A 28x28 MNIST digit rendered as a larger picture of the given kind."""
    big = Image.fromarray(digit).resize((280, 280), Image.BICUBIC)
    ink = np.asarray(big, dtype=np.float32) / 255.0
    if kind == "light-on-dark":
        return big
    if kind == "dark-on-light":
        return Image.fromarray(255 - np.asarray(big))
    if kind == "off-centre":  # small, near a corner of a large dark picture
        canvas = Image.new("L", (1000, 700), 0)
        canvas.paste(big.resize((140, 140), Image.BICUBIC), (800, 40))
        return canvas
    if kind == "rgb":  # blue ink on cream paper
        rgb = np.stack([235 - 190 * ink, 225 - 160 * ink, 205 - 40 * ink], -1)
        return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    if kind == "transparent":  # dark ink on a transparent background
        rgba = np.zeros((280, 280, 4), dtype=np.uint8)
        rgba[..., 3] = np.round(255 * ink).astype(np.uint8)
        return Image.fromarray(rgba, mode="RGBA")
    if kind == "large":  # 3000x2400, dark on light
        canvas = Image.new("L", (3000, 2400), 255)
        canvas.paste(Image.fromarray(255 - np.asarray(big.resize((2000, 2000), Image.BICUBIC))), (700, 250))
        return canvas
    if kind == "photo":  # thin pen on unevenly lit, noisy paper, JPEG-compressed
        rng = np.random.default_rng(seed)
        pen = np.asarray(Image.fromarray(digit).resize((600, 600), Image.BICUBIC)) > 160
        pen = ndimage.gaussian_filter(ndimage.binary_erosion(pen, iterations=8).astype(np.float32), 1.5)
        yy, xx = np.mgrid[0:800, 0:1000]
        paper = 140 + 100 * xx / 1000 + 15 * yy / 800 + 8 * rng.standard_normal((800, 1000))
        paper[100:700, 200:800] -= 110 * pen
        paper[:, :60] = 40  # the table beside the sheet
        return jpeg(Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)), 70)
    raise ValueError(kind)


KINDS = ("light-on-dark", "dark-on-light", "off-centre", "rgb", "transparent", "large", "photo")


def held_out(count: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = digits()
    return x[:count], y[:count]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


# ---------------------------------------------------------------------------------------------
# The conversion.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_conversion_recovers_the_mnist_digit(kind):
    x, _ = held_out(12)
    scores = []
    for digit in x:
        out = mnist_style(render(digit, kind))
        assert out.shape == (28, 28) and out.dtype == np.uint8
        ys, xs = np.nonzero(out > 40)
        assert max(np.ptp(ys), np.ptp(xs)) + 1 <= 21, "the digit must fit MNIST's 20x20 box"
        cy, cx = ndimage.center_of_mass(out.astype(np.float64))
        assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1, "centred by mass"
        scores.append(correlation(out, digit))
    # The original digits were made the same way, so the conversion gives them back
    # (up to sub-pixel shifts; the photo's thin pen is thickened, not recovered exactly).
    assert np.median(scores) > (0.6 if kind == "photo" else 0.75), scores


def test_polarity_and_colour_do_not_change_the_result():
    digit = held_out(1)[0][0]
    light = mnist_style(render(digit, "light-on-dark"))
    for kind in ("dark-on-light", "rgb", "transparent"):
        assert np.abs(mnist_style(render(digit, kind)).astype(int) - light).mean() < 6, kind


def test_strokes_touching_the_border_are_ink_but_a_frame_is_not():
    from PIL import ImageDraw
    img = Image.new("L", (280, 280), 0)
    draw = ImageDraw.Draw(img)
    draw.line([(170, 0), (170, 279)], fill=255, width=18)   # a 4 drawn edge to edge: its long stroke
    draw.line([(120, 40), (60, 170), (145, 170)], fill=255, width=18)  # ... and its other stroke, apart
    out = mnist_style(img)
    assert (out > 100).sum(0).max() >= 18, "the edge-to-edge stroke is kept"
    assert np.ptp(np.nonzero(out > 40)[1]) + 1 >= 8, "so is the other one"
    framed = Image.new("L", (400, 300), 255)
    framed.paste(render(held_out(1)[0][0], "dark-on-light").resize((200, 200)), (120, 50))
    ImageDraw.Draw(framed).rectangle([(0, 0), (30, 299)], fill=20)  # a dark table edge along one side
    assert correlation(mnist_style(framed), mnist_style(render(held_out(1)[0][0], "dark-on-light"))) > 0.9


def test_a_blank_picture_has_no_digit():
    noise = (128 + 4 * np.random.default_rng(0).standard_normal((300, 300))).astype(np.uint8)
    for img in (Image.new("L", (200, 200), 255), Image.new("RGB", (50, 80), (30, 30, 30)), jpeg(Image.fromarray(noise))):
        with pytest.raises(UserError, match="no digit found"):
            mnist_style(img)


def test_unreadable_pictures_are_refused(tmp_path):
    with pytest.raises(UserError, match="empty"):
        read_image(b"")
    with pytest.raises(UserError, match="cannot be decoded as a picture"):
        read_image(b"certainly not a PNG", "upload")
    with pytest.raises(UserError, match="cannot read"):
        read_image(tmp_path / "missing.png")


# ---------------------------------------------------------------------------------------------
# Predictions.
# ---------------------------------------------------------------------------------------------
def test_classifier_shapes_and_cam(untrained_model):
    classifier = Classifier.from_file(untrained_model)
    pictures = [render(d, "dark-on-light") for d in held_out(3)[0]]
    results = classifier.classify(pictures, cam=True)
    assert len(results) == 3
    for r in results:
        assert r.model_input.shape == (1, 28, 28) and r.model_input.dtype == torch.uint8
        assert r.probs.shape == (10,) and abs(float(r.probs.sum()) - 1) < 1e-5
        assert r.cam.shape == (28, 28) and 0 <= float(r.cam.min()) and float(r.cam.max()) <= 1
        top = r.top(3)
        assert [p for _, p in top] == sorted((p for _, p in top), reverse=True) and top[0][0] == r.label


def test_predictions_survive_the_conversion(trained_model):
    """Digits the model gets right as MNIST images, it still gets right as pictures of any kind."""
    from mobilenet_lab.evaluation import evaluate
    classifier = Classifier.from_file(trained_model)
    x, y = held_out(HELD_OUT)
    pred = evaluate(classifier.net, torch.from_numpy(x).unsqueeze(1))
    sure = np.flatnonzero((pred.probs.argmax(1).numpy() == y) & (pred.probs.max(1).values.numpy() > 0.9))[:15]
    assert len(sure) == 15, "the trained fixture model should be confident on many digits"
    for kind in KINDS:
        results = classifier.classify([render(x[i], kind, seed=int(i)) for i in sure])
        right = sum(r.index == y[i] for r, i in zip(results, sure))
        assert right >= 13, f"{kind}: {right}/15 right"


def write_pictures(folder: Path, count: int = 4) -> dict[str, int]:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = held_out(count)
    names = {}
    kinds = [("dark-on-light", ".png"), ("rgb", ".jpg"), ("off-centre", ".png"), ("photo", ".jpg")][:count]
    for i, (kind, ext) in enumerate(kinds):
        name = f"digit{i}_{kind}{ext}"
        render(x[i], kind, seed=i).convert("RGB").save(folder / name)
        names[name] = int(y[i])
    return names


def test_predict_command_prints_top3_and_saves_cams(trained_model, tmp_path, capsys):
    pictures = write_pictures(tmp_path / "pics")
    assert main([str(tmp_path / "pics"), "--model", str(trained_model), "--cam"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(str(tmp_path / "pics"))]
    assert len(lines) == len(pictures)
    for name in pictures:
        line = next(line for line in lines if name in line)
        assert line.count("%") == 3
        cam = tmp_path / "pics" / (Path(name).stem + CAM_SUFFIX)
        assert cam.is_file() and Image.open(cam).size == (224 * 2 + 8, 224)
        assert f"Grad-CAM: {cam}" in out
    # A second run on the folder does not take the Grad-CAM pictures for digits.
    cams = tmp_path / "cams"
    assert main([str(tmp_path / "pics"), "--model", str(trained_model), "--top", "1", "--cam", "--cam-dir",
                 str(cams)]) == 0
    again = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(tmp_path / "pics"))]
    assert len(again) == len(pictures) and all(line.count("%") == 1 for line in again)
    assert sorted(p.name for p in cams.iterdir()) == sorted(Path(n).stem + CAM_SUFFIX for n in pictures)


def test_predict_command_reports_bad_pictures_and_goes_on(trained_model, tmp_path, capsys):
    write_pictures(tmp_path, 1)
    (tmp_path / "notes.png").write_text("not a picture")
    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    assert main([str(tmp_path), "--model", str(trained_model)]) == 2
    captured = capsys.readouterr()
    assert "digit0_dark-on-light.png" in captured.out
    errors = captured.err.strip().splitlines()
    assert any("notes.png" in e and "cannot be decoded" in e for e in errors)
    assert any("blank.png" in e and "no digit found" in e for e in errors)
    assert errors[-1].startswith("error: 2 of 3 pictures") and "Traceback" not in captured.err


@pytest.mark.parametrize("args, message", [
    (["missing.png"], "does not exist"),
    (["{folder}", "--model", "{folder}/none.pt"], "no saved model"),
    (["{folder}", "--top", "0"], "--top 0"),
])
def test_predict_command_bad_input_is_one_line(tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    write_pictures(tmp_path / "pics", 1)
    argv = [a.format(folder=tmp_path / "pics") for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_an_empty_folder_is_refused(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "holds no pictures" in capsys.readouterr().err
