"""Batched augmentation on tensors: each training image of a batch gets its own random rotation,
shift, scale and shear (one affine map), a smooth elastic bend and, when asked, an erased box.

Working on the whole batch at once (one ``grid_sample``) is what keeps the data wait of a
training step small: there is no per-image Python work left to parallelise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import Config

ELASTIC_GRID = 5            # the elastic field's random offsets sit on a 5 x 5 lattice (7 px apart at 28x28)
ERASE_AREA = (0.02, 0.10)   # share of the image a random erasing box covers
ERASE_ASPECT = (0.3, 3.3)   # its height / width, drawn log-uniformly


def random_distort(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0, translate: float = 0.1,
                   scale: float = 0.1, shear: float = 0.0, elastic: float = 0.0) -> torch.Tensor:
    """Rotate (up to ``degrees``), shift (up to ``translate`` of the side) and scale (by up to ``scale``)
    each image of a float batch (N, C, H, W); with ``shear`` > 0 also slant it by up to that many
    degrees (horizontal strokes stay level, as in slanted handwriting), and with ``elastic`` > 0 bend
    it by a smooth random field of up to that many pixels (Simard et al. 2003).

    The elastic field is uniform random offsets on an ELASTIC_GRID x ELASTIC_GRID lattice, upsampled
    bicubically and added to the affine map, so one ``grid_sample`` does both. The shear and the field
    are drawn after the affine's numbers, and only when asked, so runs without them repeat older ones.
    Pixels from outside the image are 0 (MNIST's black background).
    """
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


def random_erase(x: torch.Tensor, generator: torch.Generator, probability: float) -> torch.Tensor:
    """Blank one random box (ERASE_AREA of the image, aspect ratio in ERASE_ASPECT) in each image of a
    float batch with ``probability`` (random erasing, Zhong et al. 2020). Every image draws its box
    whether or not it is erased, so the draws do not depend on ``probability``; torchvision's
    RandomErasing draws one box for a whole batch tensor."""
    n, _, height, width = x.shape
    rand = torch.rand(n, 5, generator=generator)
    area = (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * rand[:, 0]) * height * width
    log_low, log_high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = torch.exp(log_low + rand[:, 1] * (log_high - log_low))
    box_h = (area * aspect).sqrt().round().clamp(1, height)
    box_w = (area / aspect).sqrt().round().clamp(1, width)
    top, left = (rand[:, 2] * (height - box_h + 1)).floor(), (rand[:, 3] * (width - box_w + 1)).floor()
    rows, cols = torch.arange(height).view(1, height, 1), torch.arange(width).view(1, 1, width)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1))
              & (rand[:, 4] < probability).view(-1, 1, 1))
    return x.masked_fill(inside.unsqueeze(1).to(x.device), 0.0)


def augment(images: torch.Tensor, generator: torch.Generator, config: Config) -> torch.Tensor:
    """A uint8 batch as floats in [0, 1], augmented as ``config`` says (nothing with ``augment`` off)."""
    x = images.float().div_(255.0)
    if config.augment:
        x = random_distort(x, generator, config.degrees, config.translate, config.scale, config.shear,
                           config.elastic)
        if config.erase > 0:  # with 0 no draws, so runs without erasing repeat
            x = random_erase(x, generator, config.erase)
    return x
