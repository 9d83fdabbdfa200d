"""Classify pictures of digits with a saved model: any size and colour, a photo of paper included.

    python -m mobilenet_lab predict IMAGE_OR_FOLDER... [--model PATH] [--top K] [--cam]

Each picture is first converted the way MNIST was made (preprocess.py); the most probable classes are printed per
picture. With ``--cam``, a Grad-CAM picture (what the model saw, and where it looked) is saved next to each picture."""
import argparse
import base64
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from ..checkpoint import load
from ..errors import Parser, UserError, run_cli
from ..evaluation import evaluate
from ..reading import IMAGE_EXTENSIONS
from .insight import grad_cam
from .preprocess import read_image, to_model_input

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "saved_models" / "mobilenet.pt"
CAM_SUFFIX = ".cam.png"   # Grad-CAM pictures written by --cam (skipped when a folder is read again)
PICTURE_SCALE = 8         # 28x28 inputs are drawn 224x224


@dataclass
class Classification:
    """What the model made of one picture: the MNIST-style input it saw (uint8 C x H x W), every class's probability,
    and the Grad-CAM map of the predicted class (or None)."""
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
    """A loaded model with the MNIST-style conversion in front of it."""

    def __init__(self, net: torch.nn.Module, class_names: list[str] | None = None):
        self.net = net.eval()
        self.class_names = list(class_names or [str(i) for i in range(net.architecture.num_classes)])

    @classmethod
    def from_file(cls, path: str | Path) -> "Classifier":
        return cls(load(path))

    def describe(self) -> str:
        c = self.net.architecture
        return (f"{c.conv_block_count} conv + {c.mobilenet_block_count} ConvDw blocks, input "
                f"{'x'.join(map(str, c.input_dim))}, {len(self.class_names)} classes")

    def classify(self, pictures: list[Image.Image], cam: bool = False) -> list[Classification]:
        """Classify pictures of single digits; a picture with no digit (blank, too little contrast) is a UserError."""
        if not pictures:
            return []
        x = torch.stack([to_model_input(p, self.net.architecture.input_dim) for p in pictures])
        pred = evaluate(self.net, x)
        maps = list(grad_cam(self.net, x, pred.probs.argmax(1))) if cam else [None] * len(pictures)
        return [Classification(x[i], pred.probs[i], self.class_names, maps[i]) for i in range(len(pictures))]


def model_input_picture(model_input: torch.Tensor, scale: int = PICTURE_SCALE) -> Image.Image:
    """The network's input as an RGB picture, enlarged with crisp pixels."""
    arr = model_input.numpy()
    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)).convert("RGB")
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def cam_picture(model_input: torch.Tensor, cam: torch.Tensor, scale: int = PICTURE_SCALE, opacity: float = 0.5) -> Image.Image:
    """A Grad-CAM heatmap (jet colours, red = most evidence) laid over the network's input."""
    base = np.asarray(model_input_picture(model_input, scale), dtype=np.float32) / 255.0
    heat = Image.fromarray(cam.numpy().astype(np.float32), mode="F").resize(base.shape[1::-1], Image.BILINEAR)
    colours = colormaps["jet"](np.clip(np.asarray(heat), 0, 1))[..., :3]
    return Image.fromarray(np.round(255 * ((1 - opacity) * base + opacity * colours)).astype(np.uint8))


def png_data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def save_cam(result: Classification, path: Path) -> Path:
    """What the model saw beside its Grad-CAM overlay, as one PNG."""
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
    """The picture files named: files as given, folders' pictures (sorted, not recursive, earlier Grad-CAMs skipped)."""
    found: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            pictures = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                              and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.endswith(CAM_SUFFIX))
            if not pictures:
                raise UserError(f"folder {path} holds no pictures ({', '.join(IMAGE_EXTENSIONS)})")
            found.extend(pictures)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path} does not exist: give picture files or folders of pictures")
    return found


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m mobilenet_lab predict", description="Classify pictures of "
                                "handwritten digits (any size or colour, photos of paper too) with a saved model, each "
                                "converted the way MNIST was made.")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="picture files, or folders of pictures")
    p.add_argument("--model", metavar="PATH", type=Path, default=DEFAULT_MODEL, help="saved model (default: "
                   "saved_models/mobilenet.pt)")
    p.add_argument("--top", metavar="K", type=int, default=3, help="most probable classes printed (default: 3)")
    p.add_argument("--cam", action="store_true", help="also save NAME.cam.png: what the model saw and where it looked")
    p.add_argument("--cam-dir", metavar="DIR", type=Path, help="with --cam, write the pictures here (default: beside each)")
    return run_cli(run, p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Classify the pictures; a picture that fails is reported and skipped (exit status 2 at the end)."""
    if not 1 <= args.top <= 1000:
        raise UserError(f"--top {args.top} must be between 1 and 1000")
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
        ranked = "   ".join(f"{label:>2} {prob:6.1%}" for label, prob in result.top(args.top))
        print(f"{str(path):<{width}}  {ranked}", flush=True)
        if args.cam:
            cam = (args.cam_dir or path.parent) / (path.stem + CAM_SUFFIX)
            print(f"{'':<{width}}  Grad-CAM: {save_cam(result, cam)}")
    if failed:
        print(f"error: {failed} of {len(pictures)} pictures could not be classified (see above)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
