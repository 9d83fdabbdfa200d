"""The networks: the standard conv block, the MobileNet v1 ``ConvDw`` block, and ``init_network`` (the assignment's
pattern: input -> conv blocks -> MobileNet blocks -> global average pooling -> fc). Both blocks are built from one
conv + BatchNorm + ReLU unit, as torchvision's ``Conv2dNormActivation`` builds it."""
import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .config import Config
from .errors import UserError

BASE_WIDTH = 48       # channels of the first block
MAX_WIDTH = 512       # channels stop doubling here
MIN_DOWNSAMPLE = 8    # a block halves the feature map only while it is at least this big


class ConvBNReLU(nn.Sequential):
    """Convolution (no bias: batch norm has one) -> BatchNorm -> ReLU, padded to keep the size; stride 2 halves the
    feature map, and ``groups=in_channels`` makes the convolution depthwise."""

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
    """MobileNet v1 depthwise-separable block (Figure 2(b), right): a 3x3 depthwise convolution (one filter per input
    channel) with BN and ReLU filters each of the ``in_channels`` channels (M); a 1x1 pointwise convolution with BN and
    ReLU then combines them into ``out_channels`` (N). ``stride`` 2 halves the feature map. Its cost is 1/N + 1/Dk^2 of
    a standard 3x3 convolution's."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            ConvBNReLU(in_channels, in_channels, 3, stride, groups=in_channels),  # depthwise
            ConvBNReLU(in_channels, out_channels, 1),                              # pointwise
        )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    @property
    def depthwise(self) -> nn.Conv2d:
        return self[0][0]

    @property
    def pointwise(self) -> nn.Conv2d:
        return self[1][0]


@dataclass(frozen=True)
class Architecture:
    """init_network's arguments: everything needed to build the network again (stored in every checkpoint)."""
    conv_block_count: int
    mobilenet_block_count: int
    input_dim: tuple[int, int, int]
    num_classes: int


def block_schedule(block_count: int, input_dim: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, stride) of each block, conv blocks and MobileNet blocks alike.

    Like MobileNet v1, every second block halves the feature map and doubles the channels, but only while the map is
    at least MIN_DOWNSAMPLE pixels: on 28x28 digits the map stops at 7x7 after the fourth block, and later blocks keep
    its size and width. Inputs of 64 pixels or more also start with a stride-2 block, as MobileNet's does on 224x224."""
    channels, height, width = input_dim
    side = min(height, width)
    schedule, in_ch, out_ch = [], channels, BASE_WIDTH
    for i in range(block_count):
        halve = side >= MIN_DOWNSAMPLE and ((i % 2 == 1) or (i == 0 and side >= 64))
        if halve:
            side = (side + 1) // 2
            if i > 0:
                out_ch = min(out_ch * 2, MAX_WIDTH)
        schedule.append((in_ch, out_ch, 2 if halve else 1))
        in_ch = out_ch
    return schedule


class InputNormalize(nn.Module):
    """uint8 images become floats in [0, 1], then are standardised with the training images' mean and std (buffers:
    they travel in the checkpoint with the weights)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.full((1, channels, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, channels, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std


class MobileNetLab(nn.Module):
    """input -> conv blocks -> ConvDw blocks -> global average pooling -> fc: class logits (the loss and the prediction
    code apply the softmax); ``features(x)`` are the pooled features the fc layer sees. Made by :func:`init_network`."""

    def __init__(self, architecture: Architecture):
        super().__init__()
        self.architecture = architecture
        conv, mobile = architecture.conv_block_count, architecture.mobilenet_block_count
        self.input = InputNormalize(architecture.input_dim[0])
        schedule = block_schedule(conv + mobile, architecture.input_dim)
        self.blocks = nn.Sequential(*[conv_block(*s) if i < conv else ConvDw(*s) for i, s in enumerate(schedule)])
        self.pool = nn.AdaptiveAvgPool2d(1)  # global average pooling: one number per channel
        self.fc = nn.Linear(schedule[-1][1], architecture.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.blocks(self.input(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def pick_device(name: str = "auto") -> torch.device:
    """The device called ``name``; "auto": the machine's GPU (CUDA or Apple) when it has one, else the CPU."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if name == "auto":
        return accelerator or torch.device("cpu")
    if name != "cpu" and (accelerator is None or accelerator.type != name):
        raise UserError(f"--device {name} is not available on this machine: use --device auto or cpu")
    return torch.device(name)


def init_network(conv_block_count: int, mobilenet_block_count: int, input_dim=(1, 28, 28), num_classes: int = 10,
                 device: torch.device | str = "auto") -> MobileNetLab:
    """Build the network: input -> ``conv_block_count`` standard 3x3 conv blocks -> ``mobilenet_block_count`` ConvDw
    blocks -> global average pooling -> fc, for images of ``input_dim`` (C, H, W) and ``num_classes`` classes, on
    ``device`` ("auto": the GPU when there is one)."""
    Config(conv_block_count=conv_block_count, mobilenet_block_count=mobilenet_block_count,
           input_dim=tuple(input_dim), num_classes=num_classes)  # the range check of every setting
    net = MobileNetLab(Architecture(conv_block_count, mobilenet_block_count, tuple(input_dim), num_classes))
    return net.to(pick_device(device) if isinstance(device, str) else device)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def fused_for_inference(net: MobileNetLab) -> MobileNetLab:
    """A copy of ``net`` in eval mode with each batch norm folded into its convolution: the same outputs, faster."""
    fused = copy.deepcopy(net).eval()
    for unit in fused.modules():
        if isinstance(unit, ConvBNReLU) and isinstance(unit[1], nn.BatchNorm2d):
            unit[0], unit[1] = fuse_conv_bn_eval(unit[0], unit[1]), nn.Identity()
    return fused
