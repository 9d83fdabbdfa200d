"""ConvDw, conv blocks and init_network."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mobilenet_lab.config import ARCHS
from mobilenet_lab.errors import UserError
from mobilenet_lab.model import ConvDw, block_schedule, conv_block, init_network


def test_convdw_structure_and_parameter_count():
    block = ConvDw(32, 64, stride=2)
    dw, pw = block.depthwise, block.pointwise
    assert isinstance(dw, nn.Conv2d) and dw.kernel_size == (3, 3) and dw.groups == 32 and dw.stride == (2, 2)
    assert dw.in_channels == dw.out_channels == 32 and dw.bias is None
    assert isinstance(pw, nn.Conv2d) and pw.kernel_size == (1, 1) and pw.groups == 1
    assert (pw.in_channels, pw.out_channels) == (32, 64) and pw.bias is None
    kinds = [type(m) for m in block.modules() if not isinstance(m, nn.Sequential)]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    # 3*3*32 depthwise + 2*32 BN, then 32*64 pointwise + 2*64 BN
    assert sum(p.numel() for p in block.parameters()) == 3 * 3 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    assert block(torch.randn(2, 32, 14, 14)).shape == (2, 64, 7, 7)


def test_conv_block_structure():
    block = conv_block(1, 32)
    kinds = [type(m) for m in block.modules() if not isinstance(m, nn.Sequential)]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert block[0].kernel_size == (3, 3)
    assert sum(p.numel() for p in block.parameters()) == 3 * 3 * 1 * 32 + 2 * 32


@pytest.mark.parametrize("conv,mobile", [c for c in itertools.product(range(0, 6), range(0, 9)) if sum(c) > 0])
def test_every_count_combination_28x28(conv, mobile):
    net = init_network(conv, mobile, (1, 28, 28), 10, device="cpu")
    assert net(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 10)
    assert sum(isinstance(m, ConvDw) for m in net.modules()) == mobile
    convs = [b for b in net.blocks if not isinstance(b, ConvDw)]
    assert len(convs) == conv


@pytest.mark.parametrize("dim", [(1, 28, 28), (3, 32, 32), (1, 64, 64), (3, 224, 224), (1, 7, 5), (1, 1, 1)])
@pytest.mark.parametrize("conv,mobile", [(0, 1), (1, 6), (4, 0), (2, 14)])
def test_any_input_dim(dim, conv, mobile):
    net = init_network(conv, mobile, dim, 7, device="cpu")
    x = torch.rand(2, *dim)
    assert net(x).shape == (2, 7)
    side = min(dim[1:])
    for _, _, stride in block_schedule(conv + mobile, dim):
        side = (side + 1) // 2 if stride == 2 else side
        assert side >= 1


def test_the_two_archs_are_the_assignments_architectures():
    mobilenet = init_network(*ARCHS["mobilenet"], device="cpu")
    assert not isinstance(mobilenet.blocks[0], ConvDw)
    assert all(isinstance(b, ConvDw) for b in mobilenet.blocks[1:])
    conv4 = init_network(*ARCHS["conv4"], device="cpu")
    assert len(conv4.blocks) == 4 and not any(isinstance(b, ConvDw) for b in conv4.blocks)
    for net in (mobilenet, conv4):
        assert isinstance(net.pool, nn.AdaptiveAvgPool2d) and isinstance(net.fc, nn.Linear)


@pytest.mark.parametrize("args", [(0, 0, (1, 28, 28), 10), (-1, 2, (1, 28, 28), 10), (1, 1, (2, 28, 28), 10),
                                  (1, 1, (1, 28), 10), (1, 1, (1, 0, 28), 10), (1, 1, (1, 28, 28), 1)])
def test_bad_arguments_are_user_errors(args):
    with pytest.raises(UserError):
        init_network(*args, device="cpu")


def test_uint8_and_float_inputs_agree():
    net = init_network(1, 1, device="cpu").eval()
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    assert torch.allclose(net(x), net(x.float() / 255), atol=1e-5)


def test_after_the_fourth_block_the_map_stays_7x7_and_the_width_stays():
    """On 28x28 digits every second block halves the map and doubles the channels only until the map is 7x7."""
    assert block_schedule(7, (1, 28, 28)) == [(1, 48, 1), (48, 96, 2), (96, 96, 1), (96, 192, 2), (192, 192, 1),
                                              (192, 192, 1), (192, 192, 1)]


def test_a_cpu_is_always_a_device_and_an_absent_accelerator_is_one_line():
    from mobilenet_lab.model import pick_device
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    absent = [d for d in ("cuda", "mps") if pick_device("auto").type != d]
    with pytest.raises(UserError, match="is not available on this machine"):
        pick_device(absent[0])
