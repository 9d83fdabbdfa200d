"""The training recipe's ingredients: the batched augmentation, the loss functions and the optimisers.

Each training image of a batch gets its own random rotation, shift, scale and shear (one affine map) and a smooth
elastic bend, in one ``grid_sample`` for the whole batch, which keeps the data wait of a training step small."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config

ELASTIC_GRID = 5  # the elastic field's random offsets sit on a 5 x 5 lattice (7 px apart at 28x28)


def random_distort(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0, translate: float = 0.1,
                   scale: float = 0.1, shear: float = 0.0, elastic: float = 0.0) -> torch.Tensor:
    """Rotate (up to ``degrees``), shift (up to ``translate`` of the side), scale (by up to ``scale``) and slant (up to
    ``shear`` degrees, horizontal strokes level) each image of a float batch (N, C, H, W), and bend it by a smooth
    random field of up to ``elastic`` pixels (Simard et al. 2003): uniform offsets on an ELASTIC_GRID lattice,
    upsampled bicubically and added to the affine map. Pixels from outside the image are 0 (MNIST's background)."""
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
    """A float batch in [0, 1] augmented as ``config`` says (returned as it is with ``augment`` off)."""
    if not config.augment:
        return images
    return random_distort(images, generator, config.degrees, config.translate, config.scale, config.shear,
                          config.elastic)


class BalancedSoftmaxLoss(nn.Module):
    """Balanced softmax (Ren et al. 2020): cross-entropy on logits shifted by the log class prior of the training set.
    The network then learns class-balanced scores, which suits a balanced test set while the training set is not;
    predictions use the raw logits."""

    def __init__(self, class_counts: torch.Tensor):
        super().__init__()
        self.register_buffer("log_prior", torch.log(class_counts.float().clamp(min=1) / class_counts.sum()))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.log_prior, target)


def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, scaled so that their mean over the samples is 1."""
    counts = torch.bincount(y, minlength=num_classes).float().clamp(min=1)
    weights = len(y) / (num_classes * counts)
    return weights / (weights[y].mean())


def make_loss(name: str, train_y: torch.Tensor, num_classes: int) -> nn.Module:
    """The loss called ``name`` (one of config.LOSSES) for these training labels; ``weighted-ce`` weights the classes
    by inverse frequency, ``balanced-softmax`` shifts the logits by their log prior."""
    if name == "balanced-softmax":
        return BalancedSoftmaxLoss(torch.bincount(train_y, minlength=num_classes))
    weight = class_weights(train_y, num_classes) if name == "weighted-ce" else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1 if name == "label-smoothing" else 0.0)


def make_optimizer(name: str, params, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimiser called ``name`` (adamw, adam or sgd with Nesterov momentum)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate)
    return torch.optim.SGD(params, lr=learning_rate, momentum=0.9, nesterov=True, weight_decay=weight_decay)
