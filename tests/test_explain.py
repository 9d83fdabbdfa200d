"""The cost table: measured FLOPs per layer, and ConvDw blocks against standard 3x3 convolutions."""
from __future__ import annotations

import pytest
import torch

from mobilenet_lab.tools.explain import layer_costs, main, network_flops
from mobilenet_lab.model import BASE_WIDTH, ConvDw, count_parameters, init_network

M, N = BASE_WIDTH, 2 * BASE_WIDTH  # blocks.1 of the mobilenet preset: ConvDw M->N, stride 2


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    return init_network(1, 6, (1, 28, 28), 10, device="cpu")


def block_rows(rows):
    return [r for r in rows if r.standard_flops is not None]


def test_a_known_block_by_hand(mobilenet):
    """blocks.1 is ConvDw M->N (N = 2M), stride 2, on a 28x28 map: Df = 14 at the output, Dk = 3."""
    rows = layer_costs(mobilenet)
    block = next(r for r in rows if r.name.startswith("blocks.1 "))
    depthwise, pointwise = [r for r in rows if r.part_of == block.name]
    mac = 2  # torch.utils.flop_counter counts a multiply-add as 2 FLOPs
    assert depthwise.flops == mac * 3 * 3 * M * 14 * 14          # Dk*Dk*M*Df*Df
    assert pointwise.flops == mac * M * N * 14 * 14              # M*N*Df*Df
    assert block.flops == depthwise.flops + pointwise.flops
    assert block.standard_flops == mac * 3 * 3 * M * N * 14 * 14  # Dk*Dk*M*N*Df*Df
    assert block.shape == (N, 14, 14) and depthwise.shape == (M, 14, 14)
    assert block.ratio == pytest.approx(1 / N + 1 / 9, rel=1e-12)
    assert block.params == 3 * 3 * M + 2 * M + M * N + 2 * N  # convs and their batch norms


@pytest.mark.parametrize("conv, mobile, input_dim", [(1, 6, (1, 28, 28)), (0, 4, (3, 64, 64)), (2, 3, (1, 20, 36))])
def test_every_block_matches_the_formula(conv, mobile, input_dim):
    net = init_network(conv, mobile, input_dim, 10, device="cpu")
    rows = block_rows(layer_costs(net))
    assert len(rows) == mobile
    for row in rows:
        assert row.ratio == pytest.approx(row.formula, rel=1e-9), row.name
        assert 1 / 9 < row.ratio < 1 / 9 + 1 / BASE_WIDTH + 1e-12  # 3x3 kernels, >= BASE_WIDTH output channels


def test_rows_add_up_to_the_whole_network(mobilenet):
    rows = layer_costs(mobilenet)
    top = [r for r in rows if r.part_of is None]
    assert sum(r.flops for r in top) == network_flops(mobilenet) > 0
    assert sum(r.params for r in top) == count_parameters(mobilenet)
    assert [r.shape for r in top][-1] == (10,)
    blocks = [m for m in mobilenet.blocks if isinstance(m, ConvDw)]
    assert len(block_rows(rows)) == len(blocks) == 6


def test_command_prints_the_table_and_totals(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "1 conv + 6 ConvDw blocks, input 1x28x28" in out
    header = next(line for line in out.splitlines() if line.startswith("layer"))
    for column in ("output", "params", "FLOPs", "std 3x3 FLOPs", "ratio", "1/N+1/Dk^2"):
        assert column in header
    assert f"blocks.1  ConvDw {M}->{N} s2" in out and f"depthwise 3x3 {M}->{M} s2" in out
    ratio = f"{1 / N + 1 / 9:.4f}"
    assert f"{ratio}      {ratio}" in out  # measured beside the formula
    total = next(line for line in out.splitlines() if line.startswith("total"))
    net = init_network(1, 6, device="cpu")
    assert f"{count_parameters(net):,}" in total and f"{network_flops(net):,}" in total
    assert "ConvDw blocks (6):" in out and "x fewer" in out


def test_command_on_a_saved_model_and_custom_blocks(tmp_path, capsys):
    from mobilenet_lab.checkpoint import save
    path = save(init_network(2, 1, device="cpu"), tmp_path / "m.pt")
    assert main(["--model", str(path)]) == 0
    assert "2 conv + 1 ConvDw blocks" in capsys.readouterr().out
    assert main(["--conv-block-count", "4", "--mobilenet-block-count", "0"]) == 0
    out = capsys.readouterr().out
    assert "4 conv + 0 ConvDw blocks" in out and "ConvDw blocks (" not in out


@pytest.mark.parametrize("args, message", [
    (["--model", "{tmp}/m.pt", "--conv-block-count", "1"], "not both"),
    (["--model", "{tmp}/none.pt"], "no saved model"),
    (["--conv-block-count", "0", "--mobilenet-block-count", "0"], "at least one block"),
    (["--input-dim", "28x28"], "C,H,W"),
    (["--num-classes", "1"], "--num-classes 1 must be between 2 and"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
