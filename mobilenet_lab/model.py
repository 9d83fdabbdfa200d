"""The networks: a plain conv block, the MobileNet v1 ``ConvDw`` block, and ``init_network``.

Pattern (the assignment's): input -> conv blocks -> MobileNet blocks -> global average
pooling -> fc. Both block kinds are built from one conv + BatchNorm + ReLU unit,
:class:`ConvBNReLU` (what torchvision's ``Conv2dNormActivation`` builds, with the same
parameter names; written here so that loading a model does not import torchvision).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import UserError

BASE_WIDTH = 48       # channels of the first block
MAX_WIDTH = 512       # channels stop doubling here
MIN_DOWNSAMPLE = 8    # a block halves the feature map only while it is at least this big

# The assignment's two architectures, as (conv_block_count, mobilenet_block_count).
PRESETS: dict[str, tuple[int, int]] = {
    "mobilenet": (1, 6),  # its sample network: a full-conv stem, then depthwise-separable blocks
    "conv4": (4, 0),      # 4 conv blocks, GAP and fc
}


class ConvBNReLU(nn.Sequential):
    """Convolution (no bias: batch norm has one) -> BatchNorm -> ReLU, padded to keep the size.

    Args:
        in_channels, out_channels: channels before and after.
        kernel_size: side of the square kernel (odd).
        stride: 2 halves the feature map.
        groups: ``in_channels`` makes the convolution depthwise.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> ConvBNReLU:
    """Standard convolution block (the assignment's Figure 2(b), left): 3x3 conv + BN + ReLU."""
    return ConvBNReLU(in_channels, out_channels, 3, stride)


class ConvDw(nn.Sequential):
    """MobileNet v1 depthwise-separable block (Figure 2(b), right).

    A 3x3 depthwise convolution (one filter per input channel, ``groups=in_channels``) with
    BN and ReLU filters each channel; a 1x1 pointwise convolution with BN and ReLU then
    combines the channels. Its cost is 1/N + 1/Dk^2 of a standard 3x3 convolution.

    Args:
        in_channels: channels of the input feature map (M).
        out_channels: channels of the output feature map (N).
        stride: stride of the depthwise convolution (2 halves the feature map).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            ConvBNReLU(in_channels, in_channels, 3, stride, groups=in_channels),  # depthwise
            ConvBNReLU(in_channels, out_channels, 1),                             # pointwise
        )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    @property
    def depthwise(self) -> nn.Conv2d:
        return self[0][0]

    @property
    def pointwise(self) -> nn.Conv2d:
        return self[1][0]


class InputNormalize(nn.Module):
    """The network's input stage: uint8 images become floats in [0, 1], then are standardised.

    Float input is taken as already in [0, 1]. Mean and std are buffers, so they travel in
    the checkpoint with the weights.
    """

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild a network (stored in every checkpoint)."""
    conv_block_count: int
    mobilenet_block_count: int
    input_dim: tuple[int, int, int]
    num_classes: int

    def as_dict(self) -> dict:
        d = asdict(self)
        d["input_dim"] = list(self.input_dim)
        return d


def block_schedule(block_count: int, input_dim: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, stride) for each block, conv blocks and MobileNet blocks alike.

    Like MobileNet v1, every second block halves the feature map and doubles the channels;
    halving stops while the map is below ``MIN_DOWNSAMPLE`` pixels, so it never falls below
    1x1 whatever the input size or block count. Inputs of 64 pixels or more also start with
    a stride-2 block, as MobileNet's stem does on 224x224 images.
    """
    channels, height, width = input_dim
    side = min(height, width)
    schedule, in_ch, width_now = [], channels, BASE_WIDTH
    for i in range(block_count):
        halve = side >= MIN_DOWNSAMPLE and ((i % 2 == 1) or (i == 0 and side >= 64))
        if halve:
            side = (side + 1) // 2
            if i > 0:
                width_now = min(width_now * 2, MAX_WIDTH)
        schedule.append((in_ch, width_now, 2 if halve else 1))
        in_ch = width_now
    return schedule


class MobileNetLab(nn.Module):
    """input -> conv blocks -> ConvDw blocks -> global average pooling -> fc (logits).

    Build it with :func:`init_network`. ``features(x)`` gives the pooled penultimate-layer
    features (for t-SNE); ``forward(x)`` gives class logits (softmax is applied by the loss
    and by the prediction code).
    """

    def __init__(self, config: NetConfig, mean: list[float] | None = None, std: list[float] | None = None):
        super().__init__()
        self.config = config
        channels = config.input_dim[0]
        self.input = InputNormalize(mean or [0.5] * channels, std or [0.5] * channels)
        schedule = block_schedule(config.conv_block_count + config.mobilenet_block_count, config.input_dim)
        blocks = [conv_block(*s) if i < config.conv_block_count else ConvDw(*s) for i, s in enumerate(schedule)]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(schedule[-1][1], config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.blocks(self.input(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def fused_for_inference(net: MobileNetLab) -> MobileNetLab:
    """A copy of ``net`` in eval mode with every batch norm folded into the convolution before
    it: the same outputs up to float rounding, with two passes over each feature map fewer
    (``python -m mobilenet_lab.bench`` measures the gain)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(net).eval()
    for unit in fused.modules():
        if isinstance(unit, ConvBNReLU) and isinstance(unit[1], nn.BatchNorm2d):
            unit[0], unit[1] = fuse_conv_bn_eval(unit[0], unit[1]), nn.Identity()
    return fused


def default_device() -> torch.device:
    """CUDA or Apple MPS when present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_config(conv_block_count: int, mobilenet_block_count: int, input_dim, num_classes: int) -> NetConfig:
    """Validate the network arguments and return them as a NetConfig."""
    if conv_block_count < 0 or mobilenet_block_count < 0 or conv_block_count + mobilenet_block_count < 1:
        raise UserError(f"block counts {conv_block_count} conv + {mobilenet_block_count} MobileNet: "
                        f"counts must not be negative and at least one block is needed")
    try:
        dims = tuple(int(d) for d in input_dim)
    except (TypeError, ValueError):
        raise UserError(f"input_dim {input_dim!r} is not three integers C,H,W: use e.g. 1,28,28") from None
    if len(dims) != 3 or min(dims) < 1:
        raise UserError(f"input_dim {input_dim!r} must be three positive integers C,H,W, e.g. 1,28,28")
    if dims[0] not in (1, 3):
        raise UserError(f"input_dim has {dims[0]} channels: images have 1 (grayscale) or 3 (RGB)")
    if num_classes < 2:
        raise UserError(f"num_classes {num_classes} is below 2: a classifier needs at least two classes")
    return NetConfig(conv_block_count, mobilenet_block_count, dims, num_classes)


def init_network(conv_block_count: int, mobilenet_block_count: int, input_dim=(1, 28, 28),
                 num_classes: int = 10, device: torch.device | str | None = None) -> MobileNetLab:
    """Build the network: input -> conv blocks -> MobileNet blocks -> average pooling -> fc.

    Args:
        conv_block_count: number of standard 3x3 conv + BN + ReLU blocks (0 or more).
        mobilenet_block_count: number of ConvDw blocks after them (0 or more; one block at least in all).
        input_dim: image shape (C, H, W), e.g. (1, 28, 28).
        num_classes: number of output classes.
        device: where to put the network; default: CUDA or MPS when present, else CPU.
    """
    config = check_config(conv_block_count, mobilenet_block_count, input_dim, num_classes)
    return MobileNetLab(config).to(device or default_device())


def seed_everything(seed: int) -> None:
    """Seed torch's generators, so that weights, splits and batches repeat run after run."""
    torch.manual_seed(seed)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def set_normalization(net: MobileNetLab, train_x: torch.Tensor) -> None:
    """Standardise inputs with the per-channel mean and std of the training images."""
    x = train_x.float().div_(255.0).transpose(0, 1).reshape(train_x.shape[1], -1)
    net.input.mean.copy_(x.mean(1).view(1, -1, 1, 1))
    net.input.std.copy_(x.std(1).clamp(min=1e-3).view(1, -1, 1, 1))
