"""Classify pictures of digits with a saved model: any size and colour, a photo of paper included.

    python -m mobilenet_lab.predict IMAGE_OR_FOLDER... [--model PATH] [--top K] [--cam]

Each picture is first converted the way MNIST was made (see :mod:`mobilenet_lab.preprocess`);
the top classes and their probabilities are printed per picture. With ``--cam``, a Grad-CAM
picture (what the model saw, and where it looked) is saved next to each picture.
"""
from __future__ import annotations

import argparse
import base64
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import UserError, run_cli
from .preprocess import read_image, to_model_input

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "saved_models" / "mobilenet.pt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CAM_SUFFIX = ".cam.png"   # Grad-CAM pictures written by --cam (skipped when a folder is read again)
PICTURE_SCALE = 8         # 28x28 inputs are drawn 224x224


@dataclass
class Classification:
    """What the model made of one picture.

    Attributes:
        model_input: the MNIST-style picture the network saw, uint8 (C, H, W).
        probs: softmax probability of every class, float (K,).
        class_names: the name of each class.
        cam: Grad-CAM heatmap (H, W) in [0, 1] for the predicted class, or None.
    """
    model_input: torch.Tensor
    probs: torch.Tensor
    class_names: list[str]
    cam: torch.Tensor | None = None

    @property
    def index(self) -> int:
        return int(self.probs.argmax())

    @property
    def label(self) -> str:
        return self.class_names[self.index]

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most probable classes as (name, probability), best first."""
        values, indices = self.probs.topk(min(k, len(self.probs)))
        return [(self.class_names[int(i)], float(v)) for v, i in zip(values, indices)]


class Classifier:
    """A loaded model with the MNIST-style conversion in front of it.

    Args:
        net: a trained network (``mobilenet_lab.load``).
        class_names: the name of each class (default: the checkpoint's, else "0", "1", ...).
    """

    def __init__(self, net: torch.nn.Module, class_names: list[str] | None = None):
        self.net = net.eval()
        checkpoint = getattr(net, "checkpoint", {}) or {}
        self.class_names = list(class_names or checkpoint.get("class_names")
                                or [str(i) for i in range(net.config.num_classes)])

    @classmethod
    def from_file(cls, path: str | Path) -> "Classifier":
        """Load the model saved at ``path``."""
        from .checkpoint import load
        return cls(load(path))

    def describe(self) -> str:
        """One line: block counts, input shape and classes."""
        config = self.net.config
        shape = "x".join(str(d) for d in config.input_dim)
        return (f"{config.conv_block_count} conv + {config.mobilenet_block_count} ConvDw blocks, "
                f"input {shape}, {len(self.class_names)} classes")

    def classify(self, pictures: list[Image.Image], cam: bool = False) -> list[Classification]:
        """Classify pictures of single digits.

        Args:
            pictures: the pictures, any size, mode and polarity.
            cam: also compute the Grad-CAM heatmap of each predicted class.

        Raises:
            UserError: when a picture holds no digit (blank or too little contrast).
        """
        from .training import evaluate

        if not pictures:
            return []
        x = torch.stack([to_model_input(p, self.net.config.input_dim) for p in pictures])
        pred = evaluate(self.net, x)
        maps = [None] * len(pictures)
        if cam:
            from .gradcam import grad_cam
            maps = list(grad_cam(self.net, x, pred.labels.clone()))  # clone: not an inference-mode tensor
        return [Classification(x[i], pred.probs[i], self.class_names, maps[i]) for i in range(len(pictures))]


def model_input_picture(model_input: torch.Tensor, scale: int = PICTURE_SCALE) -> Image.Image:
    """The network's input as an RGB picture, enlarged with crisp pixels.

    Args:
        model_input: uint8 (C, H, W), C 1 or 3.
        scale: enlargement factor.
    """
    arr = model_input.numpy()
    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)).convert("RGB")
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def cam_picture(model_input: torch.Tensor, cam: torch.Tensor, scale: int = PICTURE_SCALE,
                opacity: float = 0.5) -> Image.Image:
    """A Grad-CAM heatmap (jet colours, red = most evidence) laid over the network's input.

    Args:
        model_input: uint8 (C, H, W), what the network saw.
        cam: heatmap (H, W) in [0, 1].
        scale: enlargement factor.
        opacity: weight of the heatmap over the picture.
    """
    from matplotlib import colormaps

    base = np.asarray(model_input_picture(model_input, scale), dtype=np.float32) / 255.0
    heat = Image.fromarray(cam.numpy().astype(np.float32), mode="F").resize(base.shape[1::-1], Image.BILINEAR)
    colours = colormaps["jet"](np.clip(np.asarray(heat), 0, 1))[..., :3]
    return Image.fromarray(np.round(255 * ((1 - opacity) * base + opacity * colours)).astype(np.uint8))


def png_data_url(img: Image.Image) -> str:
    """A picture as a ``data:image/png;base64,...`` URL.

    Args:
        img: the picture.
    """
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def save_cam(result: Classification, path: Path) -> Path:
    """Save what the model saw beside its Grad-CAM overlay as one PNG.

    Args:
        result: a classification made with ``cam=True``.
        path: the PNG to write (its folder is created).
    """
    left, right = model_input_picture(result.model_input), cam_picture(result.model_input, result.cam)
    sheet = Image.new("RGB", (left.width + right.width + 8, left.height), "white")
    sheet.paste(left, (0, 0))
    sheet.paste(right, (left.width + 8, 0))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path)
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror}): pass a writable --cam-dir") from exc
    return path


def collect_images(inputs: list[str]) -> list[Path]:
    """The picture files named on the command line.

    Args:
        inputs: files (taken as given) and folders (their pictures, sorted, not recursive; earlier
            Grad-CAM outputs skipped).

    Raises:
        UserError: a path that does not exist, or a folder without pictures.
    """
    found: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            pictures = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                              and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(CAM_SUFFIX))
            if not pictures:
                raise UserError(f"folder {path} holds no pictures ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(pictures)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path} does not exist: give picture files or folders of pictures")
    return found


def cam_path(picture: Path, cam_dir: Path | None) -> Path:
    """Where ``--cam`` writes a picture's Grad-CAM: ``NAME.cam.png`` beside it, or in ``cam_dir``.

    Args:
        picture: the classified picture.
        cam_dir: the --cam-dir folder, or None.
    """
    return (cam_dir or picture.parent) / (picture.stem + CAM_SUFFIX)


def format_result(name: str, result: Classification, k: int, width: int) -> str:
    """One printed line: the picture's name, then the most probable classes with probabilities.

    Args:
        name: the picture's name.
        result: its classification.
        k: how many classes.
        width: column width of the name.
    """
    ranked = "   ".join(f"{label:>2} {prob:6.1%}" for label, prob in result.top(k))
    return f"{name:<{width}}  {ranked}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mobilenet_lab.predict",
        description="Classify pictures of handwritten digits (any size or colour, photos of paper too) with "
                    "a saved model. Each picture is converted the way MNIST was made: grayscale, inverted "
                    "when the background is light, cropped to the ink, scaled into a 20x20 box and centred "
                    "by mass in 28x28.")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="picture files, or folders whose pictures are all classified (required)")
    parser.add_argument("--model", metavar="PATH", type=Path, default=DEFAULT_MODEL,
                        help="saved model to use (default: saved_models/mobilenet.pt in the project)")
    parser.add_argument("--top", metavar="K", type=int, default=3,
                        help="how many of the most probable classes to print per picture (default: 3)")
    parser.add_argument("--cam", action="store_true",
                        help="also save a Grad-CAM picture, NAME.cam.png, of what the model saw and where it "
                             "looked (default: off)")
    parser.add_argument("--cam-dir", metavar="DIR", type=Path, default=None,
                        help="with --cam, write the Grad-CAM pictures here (default: beside each picture)")
    args = parser.parse_args(argv)
    return run_cli(run, args)


def run(args: argparse.Namespace) -> int:
    """Classify the pictures; a picture that fails is reported and skipped (exit status 2 at the end).

    Args:
        args: the parsed command line.
    """
    if args.top < 1:
        raise UserError(f"--top {args.top} must be at least 1")
    pictures = collect_images(args.images)
    classifier = Classifier.from_file(args.model)
    print(f"model: {args.model} ({classifier.describe()})")
    width = max(len(str(p)) for p in pictures)
    print(f"{'picture':<{width}}  top {min(args.top, len(classifier.class_names))}: class probability")
    failed = 0
    for path in pictures:
        try:
            picture = read_image(path)  # its errors name the file
            try:
                result, = classifier.classify([picture], cam=args.cam)
            except UserError as exc:
                raise UserError(f"{path}: {exc}") from exc
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(format_result(str(path), result, args.top, width), flush=True)
        if args.cam:
            print(f"{'':<{width}}  Grad-CAM: {save_cam(result, cam_path(path, args.cam_dir))}")
    if failed:
        print(f"error: {failed} of {len(pictures)} pictures could not be classified (see above)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
