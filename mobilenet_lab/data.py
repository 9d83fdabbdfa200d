"""The assignment's dataset: a train and a test part, each a folder or .zip of one CSV (image name,
label) and the images. Parts are found by name, the CSV and images by content, columns by header or
position. Each part is decoded once into a uint8 tensor, cached on disk under a checksum.
:class:`MnistCsvDataset` is the ``Dataset``; it splits itself into training and validation."""
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
import pandas as pd
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from .config import Config
from .errors import UserError, note, quoted
from .files import save_torch
from .limits import MAX_CSV_BYTES, MAX_IMAGE_BYTES, check_memory, check_size, open_image, read_member
from .sample import cache_dir

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # Pillow's 16-bit and 32-bit grayscale modes
NAME_COLUMNS = ("file", "filename", "file_name", "name", "image", "img", "image_name", "id", "path", "image_id")
LABEL_COLUMNS = ("label", "labels", "class", "target", "digit", "y", "category")
DELIMITERS = ",;\t|"
MAX_LABEL = 10**6  # far above any class count; larger numbers are not labels
CACHE_FORMAT = 2
VAL_SHARE, VAL_MIN = 0.02, 300  # the default validation split: 2%, at least 300 images (at most a fifth)


def _hidden(relpath: str) -> bool:
    """A dot-file, or anything in a dot-folder or a zip's __MACOSX folder ("/"-separated path)."""
    return relpath.startswith((".", "__MACOSX/")) or "/." in relpath or "/__MACOSX/" in relpath


class PartReader:
    """Lists and reads the files of one part, whether it is a folder or a zip file."""

    def __init__(self, path: Path):
        self.path, self._zip = path, None
        if path.is_dir():
            errors: list[OSError] = []
            self.files = sorted(os.path.relpath(os.path.join(root, name), path).replace(os.sep, "/")
                                for root, _, names in os.walk(path, onerror=errors.append) for name in names)
            if errors:
                raise UserError(f"cannot read {errors[0].filename} ({errors[0].strerror}): check its permissions")
        else:
            try:
                self._zip = zipfile.ZipFile(path)
                bad = self._zip.testzip() if path.stat().st_size < 2_000_000 else None
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise UserError(f"{path} is not a readable zip file ({exc}): re-download or re-create it") from exc
            if bad is not None:
                raise UserError(f"{path} is corrupt (bad data in {quoted(bad)}): re-download or re-create it")
            self.files = sorted(i.filename for i in self._zip.infolist() if not i.is_dir())
        self.files = [f for f in self.files if not _hidden(f)]

    def read(self, name: str, limit: int, what: str) -> bytes:
        try:
            if self._zip is not None:
                return read_member(self._zip, name, limit, str(self.path), what)
            check_size((self.path / name).stat().st_size, limit, f"{name} in {self.path}", what)
            return (self.path / name).read_bytes()
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise UserError(f"cannot read {quoted(name)} in {self.path} ({exc}): re-create the "
                            f"{self.path.name} part") from exc

    def fingerprint(self) -> str:
        """A digest of the part: every byte of a zip; a folder's CSVs and each file's path, size and time."""
        digest = hashlib.blake2b(digest_size=20)
        if self._zip is not None:
            with open(self.path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()
        for name in self.files:
            stat = (self.path / name).stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            if name.lower().endswith(".csv"):
                digest.update(self.read(name, MAX_CSV_BYTES, "label table"))
        return digest.hexdigest()

    def __enter__(self) -> "PartReader":
        return self

    def __exit__(self, *exc) -> None:
        if self._zip is not None:
            self._zip.close()


def find_part(data_dir: Path, part: str) -> Path:
    """The folder or zip of ``data_dir`` whose name contains ``part`` ("train" or "test"); a folder wins over a zip of
    the same part (an unpacked copy)."""
    prepare = f"'python -m mobilenet_lab prepare --out {data_dir} --idx ../shared/data/mnist'"
    if not data_dir.exists():
        raise UserError(f"dataset path {data_dir} does not exist: build one with {prepare} "
                        f"or leave out --data to use the embedded sample")
    if not data_dir.is_dir():
        raise UserError(f"dataset path {data_dir} is a file, not a folder: give the folder that holds "
                        f"the train and test parts (folders or .zip files)")
    try:
        entries = [p for p in data_dir.iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise UserError(f"cannot read the dataset folder {data_dir} ({exc.strerror}): check its permissions") from exc
    if not entries:
        raise UserError(f"dataset folder {data_dir} is empty: it needs a train and a test part (see {prepare})")
    chosen = [p for p in entries if part in p.name.lower() and p.is_dir()] or [
        p for p in entries if part in p.name.lower() and p.suffix.lower() == ".zip" and p.is_file()]
    if not chosen:
        raise UserError(f"no {part} part in {data_dir}: expected a folder or .zip with '{part}' in its name "
                        f"(found: {', '.join(quoted(p.name, 30) for p in sorted(entries)[:6])})")
    if len(chosen) > 1:
        raise UserError(f"{len(chosen)} candidate {part} parts in {data_dir} "
                        f"({', '.join(quoted(p.name, 30) for p in chosen[:4])}): keep one")
    return chosen[0]


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?\d+(\.0*)?", text.strip()) is not None


def parse_label_table(raw: bytes, where: str) -> tuple[list[str], list[str]]:
    """(image names, label texts) from a CSV's bytes. The first row is a header when none of its cells is an integer;
    columns are chosen by header name when one fits, else name first and label second. The delimiter may be a comma,
    semicolon, tab or bar."""
    first_line = raw.split(b"\n", 1)[0].decode("utf-8", "replace")
    delimiter = max(DELIMITERS, key=first_line.count) if any(d in first_line for d in DELIMITERS) else ","
    try:
        table = pd.read_csv(io.BytesIO(raw), header=None, dtype=str, sep=delimiter,
                            skipinitialspace=True, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{where} is empty or not a CSV ({str(exc).splitlines()[0][:80]}): "
                        f"it needs rows of image name and label") from exc
    if table.shape[1] < 2:
        raise UserError(f"{where} has {table.shape[1]} column: it needs two, image name and label, "
                        f"separated by commas")
    first = [str(c) for c in table.iloc[0]]
    name_col, label_col = 0, 1
    if not any(_is_int(c) for c in first):  # a header row
        header = [c.strip().lower() for c in first]
        table = table.iloc[1:]
        names = [i for i, h in enumerate(header) if h in NAME_COLUMNS]
        labels = [i for i, h in enumerate(header) if h in LABEL_COLUMNS]
        if labels:
            label_col = labels[0]
        elif table.shape[1] > 2:
            raise UserError(f"{where} has no label column (header: {quoted(', '.join(first))}): "
                            f"name it label, class or target")
        name_col = names[0] if names else (1 if label_col == 0 else 0)
        if table.shape[1] > 2:
            note(f"{where}: using columns {quoted(first[name_col], 30)} (image name) and "
                 f"{quoted(first[label_col], 30)} (label); ignoring the other {table.shape[1] - 2}")
    if len(table) == 0:
        raise UserError(f"{where} has no data rows: it needs one row per image (name, label)")
    return table.iloc[:, name_col].str.strip().tolist(), table.iloc[:, label_col].str.strip().tolist()


def _image_index(files: list[str]) -> dict[str, list[str]]:
    """Each image's relative path, file name and stem (lower case) -> its entries."""
    index: dict[str, list[str]] = {}
    for f in files:
        if f.lower().endswith(IMAGE_EXTENSIONS):
            p = PurePosixPath(f)
            for key in {f.lower(), p.name.lower(), p.stem.lower()}:
                index.setdefault(key, []).append(f)
    return index


def _match(name: str, index: dict[str, list[str]]) -> list[str]:
    key = name.replace("\\", "/").lower()
    hits = sorted(set(index.get(key) or index.get(PurePosixPath(key).name) or index.get(PurePosixPath(key).stem)
                      or []))
    tail = [h for h in hits if h.lower().endswith(key)]
    return tail if len(hits) > 1 and len(tail) == 1 else hits


def _labels(texts: list[str], here: str) -> list[int]:
    labels = []
    for row, text in enumerate(texts, start=2):
        if not _is_int(text):
            raise UserError(f"label {quoted(text)} on row {row} of {here} is not an integer: "
                            f"labels must be class numbers 0, 1, 2, ...")
        value = int(float(text)) if len(text) < 20 else MAX_LABEL + 1
        if value < 0:
            raise UserError(f"{here} has a negative label ({value}) on row {row}: labels must be class "
                            f"numbers 0, 1, 2, ...")
        if value > MAX_LABEL:
            raise UserError(f"label {quoted(text, 30)} on row {row} of {here} is above {MAX_LABEL:,}: labels "
                            f"must be class numbers 0, 1, 2, ...")
        labels.append(value)
    return labels


def read_labels(reader: PartReader) -> tuple[list[str], list[int]]:
    """Find the part's CSV; return (image entries, integer labels)."""
    where = reader.path
    csvs = [f for f in reader.files if f.lower().endswith(".csv")]
    if not reader.files:
        raise UserError(f"{where} is empty: it needs a CSV of image name and label and the images")
    if not csvs:
        raise UserError(f"no CSV file in {where}: each part needs a CSV of image name and label")
    index = _image_index(reader.files)
    if not index:
        others = sorted({PurePosixPath(f).suffix.lower() for f in reader.files} - {".csv"})
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {where}"
                        + (f" (found {', '.join(quoted(s, 12) for s in others[:5])} files)" if others else "")
                        + ": each part needs its image folder")
    candidates = []
    for csv in csvs:
        try:
            names, texts = parse_label_table(reader.read(csv, MAX_CSV_BYTES, "label table"), f"{csv} in {where}")
        except UserError:
            if len(csvs) == 1:
                raise
            continue
        hits = [_match(n, index) for n in names]
        candidates.append((sum(bool(h) for h in hits), csv, names, texts, hits))
    if not candidates:
        raise UserError(f"none of the CSV files in {where} ({', '.join(csvs[:4])}) holds image names and labels")
    candidates.sort(key=lambda c: -c[0])
    if len(candidates) > 1 and candidates[1][0] > 0:
        raise UserError(f"{len(csvs)} candidate CSV files in {where} ({', '.join(c[1] for c in candidates[:4])}): "
                        f"keep only the one that lists this part's images")
    _, csv, names, texts, hits = candidates[0]
    here = f"{csv} in {where}"
    ambiguous = [n for n, h in zip(names, hits) if len(h) > 1]
    if ambiguous:
        raise UserError(f"{len(ambiguous)} names in {here} match more than one image (e.g. {quoted(ambiguous[0])}): "
                        f"write the names with their folder, or keep one image folder per part")
    missing = [n for n, h in zip(names, hits) if not h]
    if missing:
        raise UserError(f"{len(missing)} of {len(names)} images listed in {here} are missing "
                        f"(e.g. {quoted(missing[0])}): add them or remove their rows")
    entries, labels = [h[0] for h in hits], _labels(texts, here)
    by_entry: dict[str, set[int]] = {}
    for entry, label in zip(entries, labels):
        by_entry.setdefault(entry, set()).add(label)
    conflicting = [e for e, found in by_entry.items() if len(found) > 1]
    if conflicting:
        raise UserError(f"{here} gives {len(conflicting)} images two different labels (e.g. {quoted(conflicting[0])}): "
                        f"keep one row per image")
    if len(by_entry) < len(entries):
        note(f"{here} lists {len(entries) - len(by_entry)} images twice with the same label; using each once")
        first = {e: i for i, e in reversed(list(enumerate(entries)))}
        keep = sorted(first.values())
        entries, labels = [entries[i] for i in keep], [labels[i] for i in keep]
    return entries, labels


def eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit or float grayscale picture as 8-bit "L": 16-bit modes (and values above 255) scale from 65535."""
    arr = np.asarray(img, dtype=np.float64)
    peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
    return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def decode_image(data: bytes, channels: int, size: tuple[int, int], where: str) -> tuple[np.ndarray, set[str]]:
    """One image as uint8 (H, W, C), converted to ``channels`` and ``size``; and notes on what was converted."""
    img, notes = open_image(data, where), set()
    if img.mode in WIDE_MODES:
        img = eight_bit(img)
        notes.add("16-bit images scaled to 8 bits")
    target = "L" if channels == 1 else "RGB"
    if img.mode != target:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            notes.add(f"{img.mode} images with transparency flattened onto black")
            img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img.convert("RGBA"))
        elif img.mode != "L" or channels != 1:
            notes.add(f"{img.mode} images converted to {'grayscale' if channels == 1 else 'RGB'}")
        img = img.convert(target)
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


def _checksum(x: torch.Tensor, y: torch.Tensor, names: list[str]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(x.contiguous().numpy().data)
    digest.update(y.contiguous().numpy().data)
    digest.update("\n".join(names).encode())
    return digest.hexdigest()


def _cached(path: Path, input_dim: tuple[int, int, int]) -> dict | None:
    """A cache entry whose shapes and checksum hold, else None (after a note when it exists)."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, weights_only=True)
        x, y, names = entry["x"], entry["y"], entry["names"]
        if (x.dtype == torch.uint8 and tuple(x.shape[1:]) == input_dim and y.dtype == torch.int64
                and len(x) == len(y) == len(names) and entry["checksum"] == _checksum(x, y, names)):
            return entry
    except Exception:  # noqa: BLE001  (any damage means: decode again)
        pass
    note(f"the decode cache entry {path} is damaged; decoding again")
    return None


def decode_part(path: Path, input_dim: tuple[int, int, int], use_cache: bool = True) -> DecodedPart:
    """Decode every image of one part, or load them from the cache when the source is unchanged."""
    channels, height, width = input_dim
    with PartReader(path) as reader:
        key = hashlib.blake2b(f"{CACHE_FORMAT}|{channels}x{height}x{width}|{reader.fingerprint()}".encode(),
                              digest_size=16).hexdigest()
        cache_file = cache_dir() / "decoded" / f"{key}.pt"
        entry = _cached(cache_file, tuple(input_dim)) if use_cache else None
        if entry is not None:
            return DecodedPart(entry["x"], entry["y"], entry["names"], str(path), entry["notes"])
        entries, labels = read_labels(reader)
        check_memory(len(entries) * channels * height * width, f"decoding {len(entries):,} images of "
                     f"{channels}x{height}x{width} from {path}", "choose a smaller --input-dim")
        x = np.empty((len(entries), height, width, channels), dtype=np.uint8)
        notes: Counter[str] = Counter()
        for i, entry_name in enumerate(entries):
            where = f"image {quoted(entry_name)} in {path}"
            x[i], found = decode_image(reader.read(entry_name, MAX_IMAGE_BYTES, "picture"), channels,
                                       (height, width), where)
            notes.update(found)
    summary = [f"{n} {text}" for text, n in sorted(notes.items())]
    for line in summary:
        note(f"{path.name}: {line}")
    part = DecodedPart(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
                       torch.tensor(labels, dtype=torch.int64), entries, str(path), summary)
    if use_cache:
        try:
            save_torch({"x": part.x, "y": part.y, "names": part.names, "notes": part.notes,
                        "checksum": _checksum(part.x, part.y, part.names)}, cache_file)
        except UserError as exc:  # a cache that cannot be written only costs speed
            note(f"the decode cache was not written ({exc}); set MOBILENET_LAB_CACHE to another folder "
                 f"to decode only once")
    return part


def stratified_pick(y: torch.Tensor, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices 0..len(y)-1 into (n picked, the rest), keeping class proportions when possible."""
    idx = np.arange(len(y))
    if n >= len(y):
        return idx, idx[:0]
    try:
        picked, rest = train_test_split(idx, train_size=n, stratify=y.numpy(), random_state=seed)
    except ValueError:  # a class too small to stratify, or n below the class count
        picked, rest = train_test_split(idx, train_size=n, random_state=seed)
    return np.sort(picked), np.sort(rest)


def _count(size, available: int, flag: str, what: str) -> int:
    """How many images a size (None: all; an int count; a float fraction) asks for."""
    if size is None:
        return available
    n = max(1, int(round(size * available))) if isinstance(size, float) else size  # a fraction keeps one
    if n > available:
        raise UserError(f"{flag} {size} is more than the {available} {what}: use at most {available}, "
                        f"or a fraction like 0.5")
    return n


class ImageSet(Dataset):
    """Images (uint8, N x C x H x W) and labels (int64, N) in memory; ``__getitems__`` serves a DataLoader's whole batch
    as one tensor index (the DataLoader calls it when present), not N ``__getitem__`` calls."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.images[idx], self.labels[idx]

    def subset(self, indices) -> "ImageSet":
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageSet(self.images[idx], self.labels[idx])

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    def split(self, val_size=None, seed: int = 0, train_size=None) -> tuple["ImageSet", "ImageSet"]:
        """(training, validation): validation first (stratified, seeded; default 2% but at least 300 images and at most
        a fifth of the part), then ``train_size`` of the rest for training."""
        n = len(self)
        if val_size is None:
            n_val = min(max(round(VAL_SHARE * n), min(VAL_MIN, n // 5)), n - 1)
        else:
            n_val = _count(val_size, n - 1, "--val-size", "training images (one must stay for training)")
        val_idx, rest = stratified_pick(self.labels, max(n_val, 1), seed)
        n_train = _count(train_size, len(rest), "--train-size", "training images left after validation")
        train_idx, _ = stratified_pick(self.labels[rest], n_train, seed)
        return self.subset(rest[train_idx]), self.subset(val_idx)


class MnistCsvDataset(ImageSet):
    """One part of the assignment's dataset (a folder or zip), decoded once into ``images`` and ``labels``."""

    def __init__(self, path: str | Path, input_dim: tuple[int, int, int] = (1, 28, 28), use_cache: bool = True):
        part = decode_part(Path(path), tuple(input_dim), use_cache)
        super().__init__(part.x, part.y)
        self.names, self.source, self.notes = part.names, part.source, part.notes


@dataclass
class Splits:
    """The training, validation and test sets, and where they came from."""
    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int
    sources: dict[str, str]
    notes: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return [str(i) for i in range(self.num_classes)]


def load_splits(data_dir: str | Path, config: Config = Config(), need_train: bool = True,
                model_path: str | None = None) -> Splits:
    """Load the dataset at ``data_dir`` and split it as ``config`` says; without ``need_train`` (evaluating) the train
    part is not read. ``model_path`` names the saved model that fixed ``num_classes``, for errors."""
    data_dir = Path(data_dir)
    test_part = find_part(data_dir, "test")
    train_part = find_part(data_dir, "train") if need_train else None
    test = MnistCsvDataset(test_part, config.input_dim)
    parts = {"test": test}
    empty = ImageSet(torch.empty((0, *config.input_dim), dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
    train, val = empty, empty
    if train_part is not None:
        parts["train"] = MnistCsvDataset(train_part, config.input_dim)
        train, val = parts["train"].split(config.val_size, config.seed, config.train_size)
    for name, part in parts.items():
        top = int(part.labels.max())
        if top >= config.num_classes:
            fix = (f"the {config.num_classes} classes of the saved model {model_path}: use a model trained on these "
                   f"classes, or --train" if model_path else
                   f"--num-classes {config.num_classes}: raise --num-classes to {top + 1} or fix the labels")
            raise UserError(f"the {name} part has label {top}, not below {fix}")
    n_test = _count(config.test_size, len(test), "--test-size", "test images")
    test_idx, _ = stratified_pick(test.labels, n_test, config.seed)
    return Splits(train, val, test.subset(test_idx), config.num_classes,
                  {name: part.source for name, part in parts.items()},
                  [line for part in parts.values() for line in part.notes])
