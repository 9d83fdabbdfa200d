"""The weight average (training.WeightAverage) and its use in train()."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mobilenet_lab as lab  # noqa: E402
from mobilenet_lab.errors import UserError  # noqa: E402
from mobilenet_lab.training import WeightAverage  # noqa: E402


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return lab.init_network(1, 1, (1, 12, 12), 3, device="cpu")


def test_the_average_follows_the_formula_with_its_warm_up():
    net = small_net()
    average = WeightAverage(net, decay=0.9)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    expected = {k: v.clone() for k, v in start.items() if v.is_floating_point()}
    for step in (1, 2, 3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * step)
            net.blocks[0][1].running_mean.add_(1.0)
            net.blocks[0][1].num_batches_tracked.add_(1)
        average.update()
        decay = min(0.9, (1 + step) / (10 + step))  # 2/11, 3/12, 4/13: below 0.9 for the first steps
        now = net.state_dict()
        for k in expected:
            expected[k] = decay * expected[k] + (1 - decay) * now[k]
    got = average.module.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k], v, atol=1e-6), k
    assert int(got["blocks.0.1.num_batches_tracked"]) == int(net.state_dict()["blocks.0.1.num_batches_tracked"])
    assert average.steps == 3
    assert not torch.equal(net.state_dict()["fc.weight"], got["fc.weight"])  # a copy, not the same tensors


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_a_decay_outside_0_1_is_refused(decay):
    with pytest.raises(UserError, match="decay"):
        WeightAverage(small_net(), decay)


def test_train_returns_the_averaged_weights_of_the_best_epoch():
    """With averaging, validation judges the average: the returned network's validation figures
    are those recorded for its best epoch."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (96, 1, 12, 12), dtype=torch.uint8)
    y = torch.arange(96) % 3
    judged = {}

    def keep(network, state):  # what TrainingSaver writes to checkpoint-best.pt at the best epoch
        judged[state["epoch"]] = {k: v.clone() for k, v in network.state_dict().items()}

    net = lab.train(small_net(), x[:64], y[:64], x[64:], y[64:], 3e-3, 3, "ce", batch_size=16,
                    average_decay=0.9, progress=False, log_epochs=False, on_epoch_end=keep)
    h = net.history
    for k, v in net.state_dict().items():
        assert torch.equal(v, judged[h["best_epoch"]][k]), k
    best = h["best_epoch"] - 1
    val = lab.evaluate(net, x[64:], y[64:])
    assert val.accuracy == pytest.approx(h["val_acc"][best])
    assert val.loss == pytest.approx(h["val_loss"][best], rel=1e-4)
