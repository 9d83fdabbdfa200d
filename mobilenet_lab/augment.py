"""Batched augmentation on tensors: each training image of a batch gets its own random rotation, shift, scale and shear
(one affine map) and a smooth elastic bend.

Working on the whole batch at once (one ``grid_sample``) is what keeps the data wait of a training step small: there is
no per-image Python work left to parallelise."""
import math

import torch
import torch.nn.functional as F

from .config import Config

ELASTIC_GRID = 5  # the elastic field's random offsets sit on a 5 x 5 lattice (7 px apart at 28x28)


def random_distort(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0, translate: float = 0.1,
                   scale: float = 0.1, shear: float = 0.0, elastic: float = 0.0) -> torch.Tensor:
    """Rotate (up to ``degrees``), shift (up to ``translate`` of the side) and scale (by up to ``scale``) each image of
    a float batch (N, C, H, W); with ``shear`` > 0 also slant it by up to that many degrees (horizontal strokes stay
    level, as in slanted handwriting), and with ``elastic`` > 0 bend it by a smooth random field of up to that many
    pixels (Simard et al. 2003).

    The elastic field is uniform random offsets on an ELASTIC_GRID x ELASTIC_GRID lattice, upsampled bicubically and
    added to the affine map, so one ``grid_sample`` does both. The shear and the field are drawn after the affine's
    numbers, and only when asked, so runs without them repeat older ones. Pixels from outside the image are 0 (MNIST's
    black background)."""
    n, _, height, width = x.shape
    rand = torch.rand(n, 4, generator=generator)
    angle = (rand[:, 0] * 2 - 1) * math.radians(degrees)
    low, high = 1 - scale, 1 + scale
    factor = low + rand[:, 1] * (high - low)
    shift = (rand[:, 2:] * 2 - 1) * translate * 2  # affine_grid coordinates span 2 per image side
    slant = torch.zeros(n)
    if shear > 0:
        slant = torch.tan((torch.rand(n, generator=generator) * 2 - 1) * math.radians(shear))
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    # rotation-and-scale times the shear [[1, slant], [0, 1]]; slant 0 gives the rotation exactly
    theta = torch.stack([torch.stack([cos, cos * slant - sin, shift[:, 0]], 1),
                         torch.stack([sin, sin * slant + cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if elastic > 0:
        offsets = torch.rand(n, 2, ELASTIC_GRID, ELASTIC_GRID, generator=generator) * 2 - 1
        field = F.interpolate(offsets, size=(height, width), mode="bicubic", align_corners=True)
        pixel = torch.tensor([2 / width, 2 / height])  # one pixel in affine_grid coordinates (x, y)
        grid = grid + field.permute(0, 2, 3, 1).to(x.dtype) * (elastic * pixel).to(x.dtype)
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(images: torch.Tensor, generator: torch.Generator, config: Config) -> torch.Tensor:
    """A uint8 batch as floats in [0, 1], augmented as ``config`` says (nothing with ``augment`` off)."""
    x = images.float().div_(255.0)
    if config.augment:
        x = random_distort(x, generator, config.degrees, config.translate, config.scale, config.shear,
                           config.elastic)
    return x
