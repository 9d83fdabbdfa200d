"""Where a network's cost goes, layer by layer, and what depthwise-separable blocks save.

    python -m mobilenet_lab.explain [--model PATH | --conv-blocks N --mobilenet-blocks M]

For every layer: its output shape, parameters and FLOPs for one image, measured with
``torch.utils.flop_counter`` (a multiply-add counts as 2 FLOPs; batch norm, ReLU and pooling
are not counted). For every ConvDw block also the FLOPs of a standard 3x3 convolution with
the same input and output channels and stride, measured the same way, their ratio, and the
MobileNet paper's formula for it, 1/N + 1/Dk^2 (N output channels, Dk the kernel size).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import UserError, run_cli
from .model import PRESETS, ConvDw, MobileNetLab, count_parameters

DEFAULT_CONV_BLOCKS, DEFAULT_MOBILENET_BLOCKS = PRESETS["mobilenet"]


@dataclass
class LayerCost:
    """The cost of one layer (or, with ``part_of``, of one half of a ConvDw block).

    Attributes:
        name: the layer, e.g. "blocks.1  ConvDw 32->64 s2".
        shape: output shape for one image (C, H, W) or (K,).
        params: learnable parameters (batch norm included).
        flops: FLOPs for one image, as torch.utils.flop_counter counts them.
        standard_flops: ConvDw blocks only: FLOPs of a standard 3x3 convolution in its place.
        standard_params: ConvDw blocks only: parameters of that convolution with its batch norm.
        formula: ConvDw blocks only: 1/N + 1/Dk^2.
        part_of: the block this row is a part of, or None for a top-level layer.
    """
    name: str
    shape: tuple[int, ...]
    params: int
    flops: int
    standard_flops: int | None = None
    standard_params: int | None = None
    formula: float | None = None
    part_of: str | None = None

    @property
    def ratio(self) -> float | None:
        """Measured FLOPs over the standard convolution's (ConvDw blocks only)."""
        return self.flops / self.standard_flops if self.standard_flops else None


def measure(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Run a module under torch's FLOP counter.

    Args:
        module: the layer.
        x: its input.

    Returns:
        (FLOPs, output).
    """
    with FlopCounterMode(display=False) as counter:
        out = module(x)
    return counter.get_total_flops(), out


def standard_conv_like(block: ConvDw) -> nn.Sequential:
    """What a ConvDw block replaces: a standard convolution (with batch norm and ReLU) mapping the
    same channels with the same kernel size, stride and padding.

    Args:
        block: the ConvDw block.
    """
    dw = block.depthwise
    return nn.Sequential(
        nn.Conv2d(block.in_channels, block.out_channels, dw.kernel_size, stride=dw.stride, padding=dw.padding,
                  bias=False),
        nn.BatchNorm2d(block.out_channels), nn.ReLU(inplace=True))


def separable_formula(block: ConvDw) -> float:
    """The paper's cost ratio of a depthwise-separable block to a standard convolution: 1/N + 1/Dk^2.

    Args:
        block: the ConvDw block (N: its output channels, Dk: its depthwise kernel size).
    """
    dk = block.depthwise.kernel_size[0]
    return 1 / block.out_channels + 1 / dk ** 2


def describe(module: nn.Module) -> str:
    """A short label for a block or layer: its kind, kernel, channels and stride.

    Args:
        module: a ConvDw block, or a conv + BN + ReLU unit.
    """
    if isinstance(module, ConvDw):
        return f"ConvDw {module.in_channels}->{module.out_channels} s{module.stride}"
    conv = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    k = "x".join(str(v) for v in conv.kernel_size)
    kind = "depthwise" if conv.groups == conv.in_channels > 1 else ("pointwise" if k == "1x1" else "conv")
    return f"{kind} {k} {conv.in_channels}->{conv.out_channels} s{conv.stride[0]}"


@torch.no_grad()
def layer_costs(net: MobileNetLab) -> list[LayerCost]:
    """Measure every layer of ``net`` on one image of its input size, on the network's device.

    Args:
        net: a network built by ``init_network`` or loaded with ``load``.

    Returns:
        One row per layer in order: the input stage, each block (each ConvDw block followed by
        its depthwise and pointwise halves), pooling and fc.
    """
    net = net.eval()
    device = next(net.parameters()).device
    x = torch.zeros(1, *net.config.input_dim, device=device)
    rows: list[LayerCost] = []

    def add(name: str, module: nn.Module, inputs: torch.Tensor, part_of: str | None = None) -> torch.Tensor:
        flops, out = measure(module, inputs)
        rows.append(LayerCost(name, tuple(out.shape[1:]), count_parameters(module), flops, part_of=part_of))
        return out

    x = add("input  normalise", net.input, x)
    for i, block in enumerate(net.blocks):
        name = f"blocks.{i}  {describe(block)}"
        if not isinstance(block, ConvDw):
            x = add(name, block, x)
            continue
        row = len(rows)
        mid = add(f"  {describe(block[0])}", block[0], x, part_of=name)
        out = add(f"  {describe(block[1])}", block[1], mid, part_of=name)
        standard = standard_conv_like(block).to(device).eval()
        standard_flops, _ = measure(standard, x)
        rows.insert(row, LayerCost(name, tuple(out.shape[1:]), count_parameters(block),
                                   rows[row].flops + rows[row + 1].flops, standard_flops,
                                   count_parameters(standard), separable_formula(block)))
        x = out
    x = add("pool   global average", net.pool, x)
    add(f"fc     {net.fc.in_features}->{net.fc.out_features}", net.fc, torch.flatten(x, 1))
    return rows


def network_flops(net: MobileNetLab) -> int:
    """FLOPs of one whole forward pass of one image, measured in one go.

    Args:
        net: the network.
    """
    with torch.no_grad():
        flops, _ = measure(net.eval(), torch.zeros(1, *net.config.input_dim, device=next(net.parameters()).device))
    return flops


def format_table(net: MobileNetLab, rows: list[LayerCost]) -> str:
    """The per-layer table with totals and the ConvDw-versus-standard summary below it.

    Args:
        net: the network.
        rows: its costs from :func:`layer_costs`.
    """
    header = ("layer", "output", "params", "FLOPs", "std 3x3 FLOPs", "ratio", "1/N+1/Dk^2")
    cells = [header]
    for r in rows:
        cells.append((r.name, "x".join(str(d) for d in r.shape), f"{r.params:,}", f"{r.flops:,}",
                      f"{r.standard_flops:,}" if r.standard_flops else "",
                      f"{r.ratio:.4f}" if r.ratio is not None else "",
                      f"{r.formula:.4f}" if r.formula is not None else ""))
    total_flops = network_flops(net)
    total_params = count_parameters(net)
    cells.append(("total", "", f"{total_params:,}", f"{total_flops:,}", "", "", ""))
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    config = net.config
    out = [f"{config.conv_block_count} conv + {config.mobilenet_block_count} ConvDw blocks, input "
           f"{'x'.join(str(d) for d in config.input_dim)}, {config.num_classes} classes; costs for one image",
           "FLOPs as torch.utils.flop_counter counts them (a multiply-add = 2; BN, ReLU, pooling not counted)", "",
           line(cells[0]), rule, *(line(c) for c in cells[1:-1]), rule, line(cells[-1])]
    blocks = [r for r in rows if r.standard_flops]
    if blocks:
        dw_flops, std_flops = sum(r.flops for r in blocks), sum(r.standard_flops for r in blocks)
        dw_params, std_params = sum(r.params for r in blocks), sum(r.standard_params for r in blocks)
        with_standard = total_flops - dw_flops + std_flops
        out += ["",
                f"ConvDw blocks ({len(blocks)}): {dw_flops:,} FLOPs where standard 3x3 convolutions would take "
                f"{std_flops:,}: ratio {dw_flops / std_flops:.4f}, {std_flops / dw_flops:.1f}x fewer; "
                f"parameters {dw_params:,} vs {std_params:,}",
                f"The same network with standard 3x3 convolutions in place of its ConvDw blocks: "
                f"{with_standard:,} FLOPs ({with_standard / total_flops:.1f}x this one's)",
                "Per block the ratio is exactly 1/N + 1/Dk^2: depthwise Dk*Dk*M*Df*Df + pointwise M*N*Df*Df "
                "over standard Dk*Dk*M*N*Df*Df."]
    return "\n".join(out)


def build_network(model: Path | None, conv_blocks: int | None, mobilenet_blocks: int | None,
                  input_dim: str, num_classes: int) -> MobileNetLab:
    """The network to explain: a saved model, or an untrained one of the given shape (costs do
    not depend on the weights).

    Args:
        model: a saved model, or None to build one from the block counts.
        conv_blocks, mobilenet_blocks: block counts (None: the mobilenet preset's).
        input_dim: "C,H,W" of the built network.
        num_classes: classes of the built network.
    """
    from .checkpoint import load
    from .model import init_network
    from .runs import parse_input_dim

    if model is not None:
        if conv_blocks is not None or mobilenet_blocks is not None:
            raise UserError("give either --model or the block counts (--conv-blocks, --mobilenet-blocks), not both")
        return load(model, device="cpu")
    conv = DEFAULT_CONV_BLOCKS if conv_blocks is None else conv_blocks
    mobile = DEFAULT_MOBILENET_BLOCKS if mobilenet_blocks is None else mobilenet_blocks
    return init_network(conv, mobile, parse_input_dim(input_dim), num_classes, device="cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mobilenet_lab.explain",
        description="Print each layer's output shape, parameters and FLOPs (measured with "
                    "torch.utils.flop_counter) and, for each ConvDw block, the FLOPs a standard 3x3 "
                    "convolution with the same channels would take, their ratio, and the formula 1/N + 1/Dk^2.")
    parser.add_argument("--model", metavar="PATH", type=Path, default=None,
                        help="explain this saved model (default: none; build the network from the block counts)")
    parser.add_argument("--conv-blocks", metavar="N", type=int, default=None,
                        help=f"standard 3x3 conv blocks of the network to build (default: {DEFAULT_CONV_BLOCKS}, "
                             f"the mobilenet preset's)")
    parser.add_argument("--mobilenet-blocks", metavar="M", type=int, default=None,
                        help=f"ConvDw blocks of the network to build (default: {DEFAULT_MOBILENET_BLOCKS}, "
                             f"the mobilenet preset's)")
    parser.add_argument("--input-dim", metavar="C,H,W", default="1,28,28",
                        help="input shape of the network to build (default: 1,28,28)")
    parser.add_argument("--num-classes", metavar="K", type=int, default=10,
                        help="classes of the network to build (default: 10)")
    args = parser.parse_args(argv)
    return run_cli(run, args)


def run(args: argparse.Namespace) -> int:
    """Build or load the network and print its cost table.

    Args:
        args: the parsed command line.
    """
    net = build_network(args.model, args.conv_blocks, args.mobilenet_blocks, args.input_dim, args.num_classes)
    print(format_table(net, layer_costs(net)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
