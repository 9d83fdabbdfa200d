"""Every size limit in one place, checked before anything is read or allocated.

A file's size comes from the file system, a zip member's from the zip's directory, an image's pixels from its header and
a run's memory from its shapes, so a hostile or damaged input is refused with one line instead of filling the memory.
The dataset loader, predict, prepare and the demo use the same limits."""
import io
import os
import warnings
import zipfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import UserError

MAX_IMAGE_BYTES = 64 * 2**20   # one picture file (a phone photo is a few MB, an MNIST digit 1 KB)
MAX_PIXELS = 50_000_000        # one picture's width x height (a 50-megapixel photo)
MAX_CSV_BYTES = 64 * 2**20     # a label table (a million rows of name,label are about 20 MB)
MAX_IDX_BYTES = 512 * 2**20    # one inflated IDX file (MNIST's training images are 47 MB)
MEMORY_SHARE = 0.8             # of the memory available, what one run may plan to use


class TooLarge(UserError):
    """An input over one of the limits (the demo answers it with HTTP 413)."""


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB" if n < 2**30 else f"{n / 2**30:,.1f} GB"


def check_size(size: int, limit: int, where: str, what: str = "file") -> None:
    if size > limit:
        raise TooLarge(f"{where} is {mb(size)}, more than the {mb(limit)} allowed for a {what}: "
                        f"use a smaller {what}")


def read_file(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of ``path``, refused when the file system says it is larger than ``limit``."""
    try:
        check_size(path.stat().st_size, limit, str(path), what)
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc}): check the path and its permissions") from exc


def read_member(zf: zipfile.ZipFile, name: str, limit: int, where: str, what: str = "file") -> bytes:
    """A zip member's bytes, refused when the zip's directory says it inflates beyond ``limit``."""
    info = zf.getinfo(name)
    check_size(info.file_size, limit, f"{name} in {where}", what)
    return zf.read(info)


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
                        f"PNG, JPEG, GIF, BMP, WebP or TIFF file") from exc


def available_memory() -> int | None:
    """Bytes of memory this machine has free for a new run (MemAvailable on Linux), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse a plan that needs more than MEMORY_SHARE of the available memory, with the estimate."""
    free = available_memory()
    if free is not None and needed > MEMORY_SHARE * free:
        raise UserError(f"{what} needs about {mb(needed)} of memory and {mb(free)} is available: {fix}")
