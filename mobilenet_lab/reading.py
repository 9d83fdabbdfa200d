"""Reading the dataset's files safely: the parts (folders or .zip files), their CSV of image names and labels, and the
images. Only regular files are read, none past its size limit whatever the file system claims; a folder walk never
follows a link to a folder; a CSV may come from another system. Decoded parts are cached on disk."""
import codecs
import csv
import hashlib
import io
import os
import re
import stat
import unicodedata
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from .errors import UserError, note, quoted
from .files import save_torch
from .sample import cache_dir

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
NAME_COLUMNS = ("file", "filename", "file_name", "name", "image", "img", "image_name", "id", "path", "image_id")
LABEL_COLUMNS = ("label", "labels", "class", "target", "digit", "y", "category")
MAX_IMAGE_BYTES = 64 * 2**20   # one picture file (a phone photo is a few MB, an MNIST digit 1 KB)
MAX_PIXELS = 50_000_000        # one picture's width x height (a 50-megapixel photo)
MAX_CSV_BYTES = 64 * 2**20     # a label table (a million rows of name,label are about 20 MB)
MAX_LABEL = 10**6              # far above any class count; larger numbers are not labels
CACHE_FORMAT = 3  # a new number when what the cache holds changes


class TooLarge(UserError):
    """An input over one of the size limits."""


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB" if n < 2**30 else f"{n / 2**30:,.1f} GB"


def check_size(size: int, limit: int, where: str, what: str) -> None:
    if size > limit:
        raise TooLarge(f"{where} is {mb(size)}, more than the {mb(limit)} allowed for a {what}: use a smaller {what}")


def read_file(path: Path, limit: int, what: str = "file", where: str | None = None) -> bytes:
    """The bytes of a regular file, refused when it is another kind of file or larger than ``limit`` (as the file
    system says, and again as read: some files say 0)."""
    where = where or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a pipe, a device, a socket or a folder
                raise UserError(f"{where} is not a regular file (a pipe, device or folder): replace it with the "
                                f"{what} itself")
            check_size(os.fstat(fd).st_size, limit, where, what)
            data = fh.read(limit + 1)
    except OSError as exc:
        raise UserError(f"cannot read {where} ({exc.strerror or exc}): check the path and its permissions") from None
    check_size(len(data), limit, where, what)
    return data


def open_image(data: bytes, where: str) -> Image.Image:
    """Decode a picture, its pixel count checked from the header first (a 100 KB PNG can hold 10^9 pixels)."""
    if not data:
        raise UserError(f"{where} is empty (0 bytes): replace it or leave it out")
    too_large = f"{where} has more than {MAX_PIXELS:,} pixels: shrink it first"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise TooLarge(too_large)
            img.load()
        return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(too_large) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UserError(f"{where} cannot be decoded as a picture ({type(exc).__name__}): replace it with a "
                        f"PNG, JPEG, GIF, BMP, WebP or TIFF file") from None


def find_part(data_dir: Path, part: str) -> Path:
    """The folder or zip of ``data_dir`` whose name contains ``part`` ("train" or "test"); a folder (an unpacked copy)
    wins over a zip."""
    if not data_dir.is_dir():
        raise UserError(f"dataset path {data_dir} is a file, not a folder: give the folder that holds the train and "
                        f"test parts" if data_dir.exists() else f"dataset path {data_dir} does not exist: give the "
                        f"folder that holds the train and test parts, or leave out --data to use the embedded sample")
    entries = [p for p in data_dir.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise UserError(f"dataset folder {data_dir} is empty: it needs a train and a test part (a folder or "
                        f".zip each, holding a CSV of image name and label and the images)")
    named = [p for p in entries if part in p.name.lower()]
    chosen = [p for p in named if p.is_dir()] or [p for p in named if p.suffix.lower() == ".zip" and p.is_file()]
    if not chosen:
        raise UserError(f"no {part} part in {data_dir}: expected a folder or .zip with '{part}' in its name "
                        f"(found: {', '.join(quoted(p.name, 30) for p in sorted(entries)[:6])})")
    if len(chosen) > 1:
        raise UserError(f"{len(chosen)} candidate {part} parts in {data_dir} "
                        f"({', '.join(quoted(p.name, 30) for p in chosen[:4])}): keep one")
    return chosen[0]


class PartReader:
    """Lists and reads the files of one part, a folder or a zip: "/"-separated names, without dot-files, dot-folders
    and a zip's __MACOSX folder."""

    def __init__(self, path: Path):
        self.path, self._zip = path, None
        if path.is_dir():
            errors: list[OSError] = []
            found = [os.path.relpath(os.path.join(root, name), path).replace(os.sep, "/")  # folder links: not followed
                     for root, _, names in os.walk(path, onerror=errors.append) for name in names]
            if errors:
                raise UserError(f"cannot read {errors[0].filename} ({errors[0].strerror}): check its permissions")
        else:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise UserError(f"{path} is not a readable zip file ({exc}): re-download or re-create it") from None
            found = [i.filename for i in self._zip.infolist() if not i.is_dir()]
        hidden = re.compile(r"(^|/)(\.|__MACOSX/)")
        self.files = sorted(f for f in found if not hidden.search(f))

    def read(self, name: str, limit: int, what: str) -> bytes:
        where = f"{what} {quoted(name)} in {self.path}"
        if self._zip is None:
            return read_file(self.path / name, limit, what, where)
        try:
            info = self._zip.getinfo(name)
            check_size(info.file_size, limit, f"{name} in {self.path}", what)
            with self._zip.open(info) as fh:
                return fh.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise UserError(f"cannot read {where} ({exc}): re-create the {self.path.name} part") from None

    def stamp(self, name: str) -> str:
        """What changes when the file does: a zip member's CRC; a file's size and modification time."""
        if self._zip is not None:
            return str(self._zip.getinfo(name).CRC)
        try:
            found = (self.path / name).stat()
        except OSError:  # a broken or looping link: reading it says so
            return "?"
        return f"{found.st_size}:{found.st_mtime_ns}"

    def __enter__(self) -> "PartReader":
        return self

    def __exit__(self, *exc) -> None:
        if self._zip is not None:
            self._zip.close()


def csv_text(raw: bytes, where: str) -> str:
    """A CSV's text: UTF-8 (with or without a byte-order mark), UTF-16 when its byte-order mark says so (Excel's
    "Unicode text"), else Windows-1252 (Excel's CSV on Windows), with a note for those two."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        note(f"{where} is UTF-16 text; read as such")
        return raw.decode("utf-16", errors="replace")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        note(f"{where} is not UTF-8; read as Windows-1252")
        return raw.decode("cp1252", errors="replace")


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?\d+(\.0*)?", text.strip()) is not None


def parse_label_table(raw: bytes, where: str) -> tuple[list[str], list[str]]:
    """(image names, label texts) from a CSV's bytes: the delimiter as the csv module sniffs it; a header when no cell
    of the first row is an integer; columns by header name when one fits, else name first and label second."""
    text = csv_text(raw, where)
    try:
        delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
    except csv.Error:  # one column, or nothing to go by
        delimiter = ","
    try:
        table = pd.read_csv(io.StringIO(text), header=None, dtype=str, sep=delimiter, skipinitialspace=True,
                            keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise UserError(f"{where} is empty or not a CSV ({str(exc).splitlines()[0][:80]}): "
                        f"it needs rows of image name and label") from None
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


def _keys(name: str) -> tuple[str, str]:
    """A name's file name and stem as matched: lower case, in Unicode's composed form (macOS writes names
    decomposed), without any folder."""
    path = PurePosixPath(unicodedata.normalize("NFC", name.replace("\\", "/")).lower())
    return path.name, path.stem


def _image_index(files: list[str]) -> dict[str, list[str]]:
    """Each image's file name and stem -> its entries."""
    index: dict[str, list[str]] = {}
    for f in files:
        for key in set(_keys(f)) if f.lower().endswith(IMAGE_EXTENSIONS) else ():
            index.setdefault(key, []).append(f)
    return index


def _match(name: str, index: dict[str, list[str]]) -> list[str]:
    name_key, stem = _keys(name)
    return index.get(name_key) or index.get(stem) or []


def _labels(texts: list[str], here: str) -> list[int]:
    """The labels as class numbers; the first text that is none is refused with its row."""
    for row, text in enumerate(texts, start=2):
        if not _is_int(text) or not 0 <= int(float(text)) <= MAX_LABEL:
            what = ("is not an integer" if not _is_int(text) else "is a negative label" if text.startswith("-")
                    else f"is above {MAX_LABEL:,}")
            raise UserError(f"label {quoted(text, 30)} on row {row} of {here} {what}: labels must be class numbers "
                            f"0, 1, 2, ...")
    return [int(float(text)) for text in texts]


def read_labels(reader: PartReader) -> tuple[list[str], list[int]]:
    """Find the part's CSV; return (the image entries it lists, their integer labels)."""
    where = reader.path
    csvs = [f for f in reader.files if f.lower().endswith(".csv")]
    if not reader.files:
        raise UserError(f"{where} is empty: it needs a CSV of image name and label and the images")
    if not csvs:
        raise UserError(f"no CSV file in {where}: each part needs a CSV of image name and label")
    index = _image_index(reader.files)
    if not index:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {where}: each part needs its image folder")
    if len(csvs) > 1:
        raise UserError(f"{len(csvs)} candidate CSV files in {where} ({', '.join(quoted(c, 30) for c in csvs[:4])}): "
                        f"keep only the one that lists this part's images")
    csv_name = csvs[0]
    names, texts = parse_label_table(reader.read(csv_name, MAX_CSV_BYTES, "label table"), f"{csv_name} in {where}")
    hits = [_match(n, index) for n in names]
    here = f"{csv_name} in {where}"
    ambiguous = [n for n, h in zip(names, hits) if len(h) > 1]
    if ambiguous:
        raise UserError(f"{len(ambiguous)} names in {here} match more than one image (e.g. {quoted(ambiguous[0])}): "
                        f"keep one image of each name in the part")
    missing = [n for n, h in zip(names, hits) if not h]
    if missing:
        raise UserError(f"{len(missing)} of {len(names)} images listed in {here} are missing "
                        f"(e.g. {quoted(missing[0])}): add them or remove their rows")
    rows = pd.DataFrame({"entry": [h[0] for h in hits], "label": _labels(texts, here)})
    conflicting = rows.groupby("entry")["label"].nunique().pipe(lambda n: n[n > 1].index.tolist())
    if conflicting:
        raise UserError(f"{here} gives {len(conflicting)} images two different labels (e.g. {quoted(conflicting[0])}): "
                        f"keep one row per image")
    if rows["entry"].duplicated().any():
        note(f"{here} lists {int(rows['entry'].duplicated().sum())} images twice with the same label; using each once")
        rows = rows.drop_duplicates("entry")
    return rows["entry"].tolist(), rows["label"].tolist()


def eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit or float grayscale picture as 8-bit "L" (16-bit modes, and values above 255, scale from 65535)."""
    arr = np.asarray(img, dtype=np.float64)
    peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
    return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def decode_image(data: bytes, channels: int, size: tuple[int, int], where: str) -> tuple[np.ndarray, set[str]]:
    """One image as uint8 (H, W, C), converted to ``channels`` and ``size``; and notes on what was converted."""
    img, notes = open_image(data, where), set()
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # Pillow's 16-bit and 32-bit grayscale modes
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


def _digest(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
    return digest.hexdigest()


def decode_part(path: Path, input_dim: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every image of one part as uint8 (N, C, H, W), with the labels and names. The decoded images are cached under a
    digest of each image's name and stamp, and checked against a digest of themselves when read back."""
    channels, height, width = input_dim
    with PartReader(path) as reader:
        entries, labels = read_labels(reader)
        key = _digest(CACHE_FORMAT, input_dim, *(f"{e}|{reader.stamp(e)}" for e in entries))
        cache_file = cache_dir() / "decoded" / f"{key[:32]}.pt"
        images, notes = _cached(cache_file, (len(entries), *input_dim))
        if images is None:
            x, notes = np.empty((len(entries), height, width, channels), dtype=np.uint8), Counter()
            for i, entry in enumerate(entries):
                x[i], found = decode_image(reader.read(entry, MAX_IMAGE_BYTES, "picture"), channels, (height, width),
                                           f"image {quoted(entry)} in {path}")
                notes.update(found)
            images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
            try:
                save_torch({"x": images, "notes": dict(notes), "checksum": _digest(images.numpy().tobytes())},
                           cache_file)
            except UserError as exc:  # a cache that cannot be written only costs speed
                note(f"the decode cache was not written ({exc}); set MOBILENET_LAB_CACHE to another folder")
    for text, n in sorted(notes.items()):
        note(f"{path.name}: {n} {text}")
    return images, torch.tensor(labels, dtype=torch.int64), entries


def _cached(path: Path, shape: tuple) -> tuple[torch.Tensor | None, dict]:
    """A cache entry's images and conversion notes when its shape and checksum hold, else None (after a note when the
    entry exists but is damaged)."""
    if path.is_file():
        try:
            entry = torch.load(path, weights_only=True)
            if tuple(entry["x"].shape) == shape and entry["checksum"] == _digest(entry["x"].numpy().tobytes()):
                return entry["x"], entry["notes"]
        except Exception:  # noqa: BLE001  (any damage means: decode again)
            pass
        note(f"the decode cache entry {path} is damaged; decoding again")
    return None, {}
