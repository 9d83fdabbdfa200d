"""Where a network's cost goes, layer by layer, and what depthwise-separable blocks save.

    python -m mobilenet_lab explain [--model PATH | --conv-block-count N --mobilenet-block-count M]
    python -m mobilenet_lab explain --model saved_models/mobilenet.pt --data ./mnist --figures runs/explain

For every layer: its output shape, parameters and FLOPs for one image, measured with torch's FLOP counter (a
multiply-add counts as 2 FLOPs; batch norm, ReLU and pooling are not counted). For every ConvDw block also the FLOPs of
a standard 3x3 convolution with the same channels and stride, their ratio, and the MobileNet paper's formula for it,
1/N + 1/Dk^2 (N output channels, Dk the kernel size). With ``--figures``: the figures of tools/insight.py for the
model on a dataset's test part."""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import matplotlib

from ..checkpoint import load, read_checkpoint
from ..config import ARCHS, Config, SettingError, parse_input_dim
from ..data import load_splits
from ..errors import Parser, UserError, run_cli
from ..evaluation import eval_mode, evaluate
from ..figures import DPI, STYLE, make_figure, pick_examples
from ..model import ConvBNReLU, ConvDw, MobileNetLab, count_parameters, init_network
from ..metrics import compute_metrics
from .insight import (activation_data, filter_data, gradcam_data, plot_activations, plot_filters, plot_gradcam,
                      plot_per_class, plot_roc, plot_tsne, roc_curves, tsne_data)


@dataclass
class LayerCost:
    """One layer (or, with ``part_of``, one half of a ConvDw block) and, for a ConvDw block, the standard 3x3
    convolution in its place."""
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
        return self.flops / self.standard_flops if self.standard_flops else None


def measure(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(FLOPs, output) of one call of ``module``."""
    with FlopCounterMode(display=False) as counter:
        out = module(x)
    return counter.get_total_flops(), out


def standard_conv_like(block: ConvDw) -> nn.Sequential:
    """What a ConvDw block replaces: a standard convolution (with batch norm and ReLU) with the same channels, kernel,
    stride and padding."""
    return ConvBNReLU(block.in_channels, block.out_channels, block.depthwise.kernel_size[0], block.stride)


def describe(module: nn.Module) -> str:
    if isinstance(module, ConvDw):
        return f"ConvDw {module.in_channels}->{module.out_channels} s{module.stride}"
    conv = module[0]
    k = "x".join(map(str, conv.kernel_size))
    kind = "depthwise" if conv.groups == conv.in_channels > 1 else "pointwise" if k == "1x1" else "conv"
    return f"{kind} {k} {conv.in_channels}->{conv.out_channels} s{conv.stride[0]}"


def layer_costs(net: MobileNetLab) -> list[LayerCost]:
    with torch.no_grad(), eval_mode(net):
        return _layer_costs(net)


def _layer_costs(net: MobileNetLab) -> list[LayerCost]:
    """Every layer of ``net`` measured on one image of its input size: the input stage, each block (a ConvDw block
    followed by its depthwise and pointwise halves), pooling and fc."""
    x = torch.zeros(1, *net.architecture.input_dim, device=next(net.parameters()).device)
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
        at = len(rows)
        out = add(f"  {describe(block[1])}", block[1], add(f"  {describe(block[0])}", block[0], x, name), name)
        standard = standard_conv_like(block).to(x.device).eval()
        rows.insert(at, LayerCost(name, tuple(out.shape[1:]), count_parameters(block), rows[at].flops + rows[at + 1].flops,
                                  measure(standard, x)[0], count_parameters(standard),
                                  1 / block.out_channels + 1 / block.depthwise.kernel_size[0] ** 2))
        x = out
    x = add("pool   global average", net.pool, x)
    add(f"fc     {net.fc.in_features}->{net.fc.out_features}", net.fc, torch.flatten(x, 1))
    return rows


def network_flops(net: MobileNetLab) -> int:
    """FLOPs of one whole forward pass of one image."""
    with torch.no_grad(), eval_mode(net):
        return measure(net, torch.zeros(1, *net.architecture.input_dim, device=next(net.parameters()).device))[0]


def format_table(net: MobileNetLab, rows: list[LayerCost]) -> str:
    """The per-layer table with totals, and the ConvDw-against-standard summary below it."""
    cells = [("layer", "output", "params", "FLOPs", "std 3x3 FLOPs", "ratio", "1/N+1/Dk^2")]
    cells += [(r.name, "x".join(map(str, r.shape)), f"{r.params:,}", f"{r.flops:,}",
               f"{r.standard_flops:,}" if r.standard_flops else "", f"{r.ratio:.4f}" if r.ratio else "",
               f"{r.formula:.4f}" if r.formula else "") for r in rows]
    total_flops, total_params = network_flops(net), count_parameters(net)
    cells.append(("total", "", f"{total_params:,}", f"{total_flops:,}", "", "", ""))
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    line = lambda row: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()  # noqa: E731
    rule = "  ".join("-" * w for w in widths)
    c = net.architecture
    out = [f"{c.conv_block_count} conv + {c.mobilenet_block_count} ConvDw blocks, input {'x'.join(map(str, c.input_dim))}, "
           f"{c.num_classes} classes; costs for one image",
           "FLOPs as torch.utils.flop_counter counts them (a multiply-add = 2; BN, ReLU, pooling not counted)", "",
           line(cells[0]), rule, *map(line, cells[1:-1]), rule, line(cells[-1])]
    blocks = [r for r in rows if r.standard_flops]
    if blocks:
        dw, std = sum(r.flops for r in blocks), sum(r.standard_flops for r in blocks)
        with_standard = total_flops - dw + std
        out += ["", f"ConvDw blocks ({len(blocks)}): {dw:,} FLOPs where standard 3x3 convolutions would take {std:,}: "
                    f"ratio {dw / std:.4f}, {std / dw:.1f}x fewer; parameters {sum(r.params for r in blocks):,} vs "
                    f"{sum(r.standard_params for r in blocks):,}",
                f"The same network with standard 3x3 convolutions in place of its ConvDw blocks: {with_standard:,} "
                f"FLOPs ({with_standard / total_flops:.1f}x this one's)",
                "Per block the ratio is exactly 1/N + 1/Dk^2: depthwise Dk*Dk*M*Df*Df + pointwise M*N*Df*Df over "
                "standard Dk*Dk*M*N*Df*Df."]
    return "\n".join(out)


def write_figures(net: MobileNetLab, data: Path, out: Path, train_counts: list[int] | None = None) -> list[Path]:
    """What the network learned, on the test part of the dataset at ``data``, as 05_per_class.png ...
    10_activations.png in ``out``: precision, recall and F1 per class (beside ``train_counts``), the last convolution
    layer's filters, ROC curves, a t-SNE map of the pooled features, Grad-CAM over 4 correct and the 4 most confident
    wrong predictions, and one digit's feature maps after every block."""
    arch = net.architecture
    test = load_splits(data, Config(input_dim=arch.input_dim, num_classes=arch.num_classes), need_train=False).test
    images, y_true = test.images, test.labels.numpy()
    probs = evaluate(net, images).probs.numpy()
    y_pred, names = probs.argmax(1), [str(i) for i in range(arch.num_classes)]
    correct, wrong = pick_examples(y_true, y_pred, probs)
    metrics = compute_metrics(y_true, y_pred, probs, names)
    draws = {"05_per_class": lambda: plot_per_class(make_figure, metrics, names, train_counts),
             "06_filters": lambda: plot_filters(make_figure, filter_data(net)),
             "07_roc": lambda: plot_roc(make_figure, roc_curves(y_true, probs, names), len(y_true)),
             "08_tsne": lambda: plot_tsne(make_figure, **tsne_data(net, images, y_true, y_pred), names=names),
             "09_gradcam": lambda: plot_gradcam(make_figure, images, y_true, y_pred, probs, names,
                                                gradcam_data(net, images, y_true, y_pred, correct, wrong)),
             "10_activations": lambda: plot_activations(make_figure, activation_data(net, images[correct[:1]]))}
    out.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        for name, draw in draws.items():
            draw().savefig(out / f"{name}.png", dpi=DPI, facecolor="white")
    return [out / f"{name}.png" for name in draws]


def main(argv: list[str] | None = None) -> int:
    conv, mobile = ARCHS["mobilenet"]
    p = Parser(prog="python -m mobilenet_lab explain", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", metavar="PATH", type=Path, help="explain this saved model (default: build the network "
                   "from the block counts)")
    p.add_argument("--conv-block-count", metavar="N", type=int, help=f"conv blocks of the network to build "
                   f"(default: {conv})")
    p.add_argument("--mobilenet-block-count", metavar="M", type=int, help=f"ConvDw blocks of the network to build "
                   f"(default: {mobile})")
    p.add_argument("--input-dim", metavar="C,H,W", default="1,28,28", help="its input shape (default: 1,28,28)")
    p.add_argument("--num-classes", metavar="K", type=int, default=10, help="its classes (default: 10)")
    p.add_argument("--figures", metavar="DIR", type=Path, help="with --model and --data: write the model's filters, "
                   "ROC curves, t-SNE map, Grad-CAM and feature maps on the dataset's test part into DIR")
    p.add_argument("--data", metavar="DIR", type=Path, help="the dataset for --figures")
    return run_cli(run, p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if args.model is not None and (args.conv_block_count is not None or args.mobilenet_block_count is not None):
        raise UserError("give either --model or the block counts (--conv-block-count, --mobilenet-block-count), "
                        "not both")
    if args.figures is not None and (args.model is None or args.data is None):
        raise UserError("--figures needs --model PATH and --data DIR")
    conv, mobile = ARCHS["mobilenet"]
    try:
        net = load(args.model, device="cpu") if args.model is not None else init_network(
            conv if args.conv_block_count is None else args.conv_block_count,
            mobile if args.mobilenet_block_count is None else args.mobilenet_block_count,
            parse_input_dim(args.input_dim, "--input-dim"), args.num_classes, device="cpu")
    except SettingError as exc:
        raise UserError(exc.flag) from None
    print(format_table(net, layer_costs(net)))
    counts = read_checkpoint(args.model)["class_counts"] if args.figures is not None else None
    for path in write_figures(net, args.data, args.figures, counts) if args.figures is not None else []:
        print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
