"""The seeds study: its shadow averages follow the schedules they name without changing the
run, and a tiny study writes its JSON and table."""
from __future__ import annotations

import contextlib
import io
import json

import torch
from torch import nn

from mobilenet_lab import seeds
from mobilenet_lab.training import WeightAverage


def step(net: nn.Module, generator: torch.Generator) -> None:
    """A stand-in for an optimiser step: new random weights and statistics."""
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            else:
                tensor.add_(1)


def test_shadows_follow_their_schedules():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    schedules = {"warm-0.9": seeds.warm(0.9), "mean-then-0.75": seeds.mean_then(0.75), "last-2": seeds.last(2),
                 "none": seeds.AVERAGES["none"]}
    total, per_epoch = 12, 3
    shadows = seeds.ShadowAverages(net, schedules, total, per_epoch)
    library = WeightAverage(net, 0.9)  # train()'s own average, stepped alongside
    generator = torch.Generator().manual_seed(1)
    snapshots = []
    for _ in range(total):
        step(net, generator)
        library.update()
        shadows.update(net)
        snapshots.append({k: v.clone() for k, v in net.state_dict().items()})
    weight = "0.weight"
    assert torch.allclose(shadows.modules["warm-0.9"].state_dict()[weight], library.module.state_dict()[weight],
                          atol=1e-6)
    assert torch.equal(shadows.modules["none"].state_dict()[weight], net.state_dict()[weight])
    window = torch.stack([s[weight] for s in snapshots[-2 * per_epoch:]]).mean(0)
    assert torch.allclose(shadows.modules["last-2"].state_dict()[weight], window, atol=1e-6)
    # mean-then-0.75: the plain mean of the first 4 steps, then decay 0.75 for the other 8
    expected = torch.stack([s[weight] for s in snapshots[:4]]).mean(0)
    for s in snapshots[4:]:
        expected = 0.75 * expected + 0.25 * s[weight]
    assert torch.allclose(shadows.modules["mean-then-0.75"].state_dict()[weight], expected, atol=1e-6)
    assert shadows.modules["last-2"].state_dict()["1.num_batches_tracked"] == net.state_dict()["1.num_batches_tracked"]


def test_a_tiny_study_writes_its_figures(tiny_data, tmp_path):
    out = tmp_path / "seeds.json"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = seeds.main(["--data", str(tiny_data), "--seeds", "0", "1", "--epochs", "2", "--out", str(out)])
    assert status == 0, stderr.getvalue()
    report = json.loads(out.read_text())
    assert [run["seed"] for run in report["runs"]] == [0, 1]
    for run in report["runs"]:
        assert set(run["averages"]) == set(seeds.AVERAGES)
        # the recipe's own average, followed alongside, is what train() returned: same schedule,
        # same re-measured statistics, so the same figures
        assert run["averages"]["warm-0.999"] == run["returned"]
        assert all(0 <= f <= 1 for figures in run["averages"].values() for f in figures.values())
    table = stdout.getvalue()
    assert "returned" in table and "last-10" in table and f"written to {out}" in table


def test_a_missing_dataset_is_one_line(tmp_path, capsys):
    assert seeds.main(["--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data") and "prepare" in err and err.count("\n") == 1


def test_an_augmentation_setting_out_of_range_is_one_line(tiny_data, capsys):
    for flag, value in (("--erase", "1.5"), ("--shear", "50")):
        assert seeds.main(["--data", str(tiny_data), flag, value]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag} {value}") and err.count("\n") == 1
