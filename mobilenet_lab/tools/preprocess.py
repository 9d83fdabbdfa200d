"""Turn any picture of a digit into the input the network was trained on, the way MNIST was made.

MNIST's digits were scanned, converted to white ink on a black background, fitted into a 20x20 box (aspect ratio kept,
grey levels from anti-aliasing) and placed in a 28x28 field with their centre of mass at the centre. :func:`mnist_style`
repeats those steps for a canvas drawing, a scan or a photo of a digit written on paper:

1. grayscale (transparency flattened onto a background that contrasts with the ink);
2. invert when the ink is darker than the background;
3. subtract the background, estimated per tile, so uneven lighting of a photo does not
   read as ink, and stretch the ink to full brightness;
4. crop to the ink (specks far smaller than the digit are dropped);
5. thicken strokes that are much thinner than MNIST's (a pen on paper), scale the crop
   into a 20x20 box and place it in 28x28 centred by mass.

Used by ``python -m mobilenet_lab.predict`` and by the draw-a-digit page."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from scipy import ndimage

from ..errors import UserError
from ..reading import MAX_IMAGE_BYTES, eight_bit, open_image, read_file

MNIST_SIDE = 28             # MNIST's field
MNIST_BOX = 20              # ... and the box the digit is scaled into
WORK_SIDE = 512             # larger pictures are shrunk to this (longest side) before processing
MIN_INK_CONTRAST = 24.0     # ink must stand this far (of 255) above the background
TILES = 8                   # background estimate: a TILES x TILES grid of tile percentiles
STROKE_FRACTION = 0.1       # MNIST strokes are about a tenth of the digit's size
SPECK_FRACTION = 0.05       # ink blobs below this share of the largest are noise
FRAME_FRACTION = 0.5        # a blob lining this share of a side of the picture is a frame, not ink


def read_image(source: bytes | str | Path, name: str | None = None) -> Image.Image:
    """A picture (PNG, JPEG, GIF, BMP, WebP, TIFF ...) from its bytes or a path, EXIF rotation applied; files, bytes and
    pixels are checked against the limits (limits.py) before decoding."""
    where = name or (str(source) if isinstance(source, (str, Path)) else "the image")
    data = read_file(Path(source), MAX_IMAGE_BYTES, "picture") if isinstance(source, (str, Path)) else source
    return ImageOps.exif_transpose(open_image(data, where))


def grayscale(img: Image.Image) -> np.ndarray:
    """The picture as a float32 array in [0, 255], shrunk to at most WORK_SIDE pixels a side.

    Transparent pixels become white behind dark ink and black behind light ink."""
    if max(img.size) > WORK_SIDE:
        img = img.copy()
        img.thumbnail((WORK_SIDE, WORK_SIDE), Image.BOX)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = eight_bit(img)  # as the dataset loader reads it
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3] / 255.0
        lum = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        ink_is_dark = (lum * alpha).sum() / max(alpha.sum(), 1e-6) < 128
        return lum * alpha + (255.0 if ink_is_dark else 0.0) * (1 - alpha)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return np.asarray(img.convert("L"), dtype=np.float32)


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Ink strength in [0, 1] per pixel (ink bright, background 0).

    The ink is the minority whose brightness lies farthest from the median; the picture is inverted when that is darker
    than the background."""
    smooth = ndimage.uniform_filter(gray, size=3)
    median = float(np.median(smooth))
    if median - smooth.min() > smooth.max() - median:  # the ink is darker than the background
        gray, smooth = 255.0 - gray, 255.0 - smooth
    ink = np.clip(gray - background(smooth), 0, None)
    strongest = float(ndimage.uniform_filter(ink, size=3).max())
    if strongest < MIN_INK_CONTRAST:
        raise UserError("no digit found: the picture is blank or its ink barely differs from the background; "
                        "draw or photograph a darker, larger digit")
    level = float(np.percentile(ink[ink > 0.5 * strongest], 90))
    floor = 0.15 * level  # paper texture and shadow left after the background subtraction
    return np.clip((ink - floor) / max(level - floor, 1e-6), 0, 1).astype(np.float32)


def background(gray: np.ndarray) -> np.ndarray:
    """Smooth background brightness per pixel: a low percentile per tile, the lowest of each tile's neighbours,
    upsampled. Ink covering most of one tile does not raise it."""
    h, w = gray.shape
    rows = np.array_split(np.arange(h), min(TILES, h))
    cols = np.array_split(np.arange(w), min(TILES, w))
    grid = np.array([[np.percentile(gray[r[0]:r[-1] + 1, c[0]:c[-1] + 1], 10) for c in cols] for r in rows],
                    dtype=np.float32)
    grid = ndimage.minimum_filter(grid, size=3, mode="nearest")
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)


def crop_to_ink(ink: np.ndarray) -> np.ndarray:
    """The ink's bounding box, with specks (blobs far smaller than the largest) erased, and frames too (blobs lining
    most of a side, such as the table beside a photographed sheet) when anything else is left."""
    labels, count = ndimage.label(ink > 0.3, structure=np.ones((3, 3)))
    if count == 0:
        raise UserError("no digit found: the ink is too faint; draw or photograph a darker digit")
    frame = np.zeros(count + 1, dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        frame |= np.bincount(edge, minlength=count + 1) >= FRAME_FRACTION * len(edge)
    sizes = ndimage.sum_labels(np.ones_like(ink), labels, index=np.arange(count + 1))
    sizes[0] = 0  # the background
    if (sizes * ~frame).max() > 0:
        sizes[frame] = 0
    keep = np.flatnonzero(sizes >= SPECK_FRACTION * sizes.max())
    near = ndimage.binary_dilation(np.isin(labels, keep), iterations=2)  # keep the blobs' soft edges
    ink = np.where(near, ink, 0)
    ys, xs = np.nonzero(near & (ink > 0))
    return ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def thicken(ink: np.ndarray) -> np.ndarray:
    """Dilate strokes that are much thinner than MNIST's (about a tenth of the digit's size)."""
    side = max(ink.shape)
    mask = ink > 0.3
    width = 2.2 * float(np.percentile(ndimage.distance_transform_edt(mask)[mask], 90))
    grow = int(round(STROKE_FRACTION * side - width))
    if grow < 2 or width >= 0.8 * STROKE_FRACTION * side:
        return ink
    radius = max(1, round(grow / 2))
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = (yy ** 2 + xx ** 2) <= radius ** 2
    return ndimage.grey_dilation(np.pad(ink, radius), footprint=disk)


def fit_and_centre(ink: np.ndarray, side: int = MNIST_SIDE) -> np.ndarray:
    """Scale the cropped ink into a box of 20/28 of ``side`` (aspect kept) and place it in a
    ``side`` x ``side`` field with its centre of mass at the centre."""
    box = max(1, round(side * MNIST_BOX / MNIST_SIDE))
    h, w = ink.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.clip(np.asarray(Image.fromarray(ink, mode="F").resize(size, Image.LANCZOS)), 0, 1)
    small = small / max(float(small.max()), 1e-6)
    cy, cx = ndimage.center_of_mass(small)
    top, left = round((side - 1) / 2 - cy), round((side - 1) / 2 - cx)
    field = np.zeros((side, side), dtype=np.float32)
    ys = slice(max(top, 0), min(top + small.shape[0], side))
    xs = slice(max(left, 0), min(left + small.shape[1], side))
    field[ys, xs] = small[ys.start - top:ys.stop - top, xs.start - left:xs.stop - left]
    return field


def mnist_style(img: Image.Image, side: int = MNIST_SIDE) -> np.ndarray:
    """A picture of one digit as an MNIST-style uint8 image (side x side, white ink on black)."""
    field = fit_and_centre(thicken(crop_to_ink(ink_map(grayscale(img)))), side)
    return np.round(field * 255).astype(np.uint8)


def to_model_input(img: Image.Image, input_dim: tuple[int, int, int]) -> torch.Tensor:
    """A picture as the network's uint8 input (C, H, W): MNIST-style, resized and channel-repeated."""
    channels, height, width = input_dim
    digit = mnist_style(img, min(height, width))
    if (height, width) != digit.shape:
        digit = np.asarray(Image.fromarray(digit).resize((width, height), Image.BILINEAR))
    return torch.from_numpy(digit).unsqueeze(0).repeat(channels, 1, 1).contiguous()
