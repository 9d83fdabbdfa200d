"""The networks: a plain conv block, the MobileNet v1 ``ConvDw`` block, and ``init_network``.

Pattern (the assignment's): input -> conv blocks -> MobileNet blocks -> global average
pooling -> fc. Both block kinds are built from one conv + BatchNorm + ReLU unit,
:class:`ConvBNReLU` (what torchvision's ``Conv2dNormActivation`` builds, with the same
parameter names; written here so that loading a model does not import torchvision)."""
import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .config import Config
from .errors import UserError

BASE_WIDTH = 48       # channels of the first block
MAX_WIDTH = 512       # channels stop doubling here
MIN_DOWNSAMPLE = 8    # a block halves the feature map only while it is at least this big


class ConvBNReLU(nn.Sequential):
    """Convolution (no bias: batch norm has one) -> BatchNorm -> ReLU, padded to keep the size.

    Args:
        in_channels, out_channels: channels before and after.
        kernel_size: side of the square kernel (odd).
        stride: 2 halves the feature map.
        groups: ``in_channels`` makes the convolution depthwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DepthwiseConvBNReLU(ConvBNReLU):
    """The depthwise unit of a ConvDw block. On the CPU it runs in float32 even inside bfloat16 autocast: oneDNN's
    bfloat16 depthwise kernels are slower than its float32 ones, while the pointwise and full convolutions gain
    (``python -m mobilenet_lab bench --sections precision`` measures both)."""

    def __init__(self, channels: int, stride: int = 1):
        super().__init__(channels, channels, 3, stride, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return super().forward(x.float())


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> ConvBNReLU:
    """Standard convolution block (the assignment's Figure 2(b), left): 3x3 conv + BN + ReLU."""
    return ConvBNReLU(in_channels, out_channels, 3, stride)


class ConvDw(nn.Sequential):
    """MobileNet v1 depthwise-separable block (Figure 2(b), right).

    A 3x3 depthwise convolution (one filter per input channel, ``groups=in_channels``) with BN and ReLU filters each
    channel; a 1x1 pointwise convolution with BN and ReLU then combines the channels. Its cost is 1/N + 1/Dk^2 of a
    standard 3x3 convolution.

    Args:
        in_channels: channels of the input feature map (M).
        out_channels: channels of the output feature map (N).
        stride: stride of the depthwise convolution (2 halves the feature map)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            DepthwiseConvBNReLU(in_channels, stride),                             # depthwise
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

    Float input is taken as already in [0, 1]. Mean and std are buffers, so they travel in the checkpoint with the
    weights."""

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

    Like MobileNet v1, every second block halves the feature map and doubles the channels; halving stops while the map
    is below ``MIN_DOWNSAMPLE`` pixels, so it never falls below 1x1 whatever the input size or block count. Inputs of 64
    pixels or more also start with a stride-2 block, as MobileNet's stem does on 224x224 images."""
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

    Build it with :func:`init_network`. ``features(x)`` gives the pooled penultimate-layer features (for t-SNE);
    ``forward(x)`` gives class logits (softmax is applied by the loss and by the prediction code)."""

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
    """A copy of ``net`` in eval mode with every batch norm folded into the convolution before it: the same outputs up
    to float rounding, with two passes over each feature map fewer (``python -m mobilenet_lab.bench`` measures the
    gain)."""
    fused = copy.deepcopy(net).eval()
    for unit in fused.modules():
        if isinstance(unit, ConvBNReLU) and isinstance(unit[1], nn.BatchNorm2d):
            unit[0], unit[1] = fuse_conv_bn_eval(unit[0], unit[1]), nn.Identity()
    return fused


def pick_device(name: str = "auto") -> torch.device:
    """The device called ``name`` ("auto": CUDA or Apple MPS when present, else the CPU), if it is here."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if not available[name]:
        raise UserError(f"--device {name} is not available on this machine: use --device auto or cpu")
    return torch.device(name)


def cpu_flags() -> set[str]:
    """This CPU's feature flags from /proc/cpuinfo (Linux only; elsewhere none)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(flags.split(":", 1)[1].split())


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def autocast_dtype(precision: str, plain: bool, device: torch.device) -> torch.dtype | None:
    """The autocast type training uses: bfloat16 for "bf16"; for "auto" only where it was measured to pay
    (docs/benchmarks.md): a network of plain conv blocks on a CPU with bfloat16 instructions. Networks with ConvDw
    blocks stay in float32: their dev accuracy fell in bfloat16. ``plain``: the network has no ConvDw block. None means
    float32."""
    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else device.type == "cpu" and cpu_has_bf16()
    if precision == "bf16" and not supported:
        raise UserError(f"--precision bf16: this {device.type.upper()} has no bfloat16 instructions: use --precision "
                        f"fp32 or auto")
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cpu" and supported
                                                     and plain) else None


def init_network(conv_block_count: int, mobilenet_block_count: int, input_dim=(1, 28, 28),
                 num_classes: int = 10, device: torch.device | str | None = None) -> MobileNetLab:
    """Build the network: input -> conv blocks -> MobileNet blocks -> average pooling -> fc.

    Args:
        conv_block_count: number of standard 3x3 conv + BN + ReLU blocks (0 or more).
        mobilenet_block_count: number of ConvDw blocks after them (0 or more; one block at least in all).
        input_dim: image shape (C, H, W), e.g. (1, 28, 28).
        num_classes: number of output classes.
        device: where to put the network; default: CUDA or MPS when present, else CPU."""
    Config(conv_blocks=conv_block_count, mobilenet_blocks=mobilenet_block_count, input_dim=tuple(input_dim),
           num_classes=num_classes)  # the range check of every setting
    net = MobileNetLab(NetConfig(conv_block_count, mobilenet_block_count, tuple(input_dim), num_classes))
    return net.to(device or pick_device())


def planned_bytes(config: Config, training: bool = True) -> int:
    """Memory a run of ``config``'s network plans to use, from its shapes alone (nothing is allocated): the weights and
    their copies (gradients, optimiser moments, the average, the best epoch's: 8 in all when training), and each block's
    output kept for the backward pass (3 tensors a unit) for one batch."""
    conv, mobile = config.block_counts
    channels, height, width = config.input_dim
    params, activations = 0, channels * height * width
    for i, (cin, cout, stride) in enumerate(block_schedule(conv + mobile, config.input_dim)):
        height, width = (height + 1) // 2 if stride == 2 else height, (width + 1) // 2 if stride == 2 else width
        params += 9 * cin * cout if i < conv else 9 * cin + cin * cout
        activations += 3 * height * width * (cout if i < conv else cin + cout)
    params += cout * config.num_classes
    batch = config.batch_size if training else 128
    return 4 * ((8 if training else 2) * params + (2 if training else 1) * batch * activations)


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
