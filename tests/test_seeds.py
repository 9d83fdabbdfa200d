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


def test_unchanged_settings_repeat_the_recipe_run_and_changes_are_undone(tiny_data):
    from mobilenet_lab import training

    helpers = {name: getattr(training, name) for name in ("make_optimizer", "random_distort", "make_batch",
                                                           "train_step")}
    recipe = seeds.run_seed(tiny_data, 0, "mobilenet", 1, averages=[])
    # the library's own values, set through the study's wrappers: the same run, figure for figure
    spelled_out = seeds.Changes(weight_decay=training.WEIGHT_DECAY, degrees=10, translate=0.1, scale=0.1)
    assert spelled_out.named() == {"weight_decay": training.WEIGHT_DECAY, "degrees": 10, "translate": 0.1,
                                   "scale": 0.1}
    assert seeds.run_seed(tiny_data, 0, "mobilenet", 1, spelled_out, averages=[])["returned"] == recipe["returned"]
    changes = seeds.Changes(lr=5e-3, weight_decay=0.05, degrees=5, dropout=0.2, mixup=0.2, clean_last=1,
                            split_seed=1)
    changed = seeds.run_seed(tiny_data, 0, "mobilenet", 2, changes, averages=["none"])
    assert changed["changes"] == changes.named() and changed["split_seed"] == 1
    assert set(changed["averages"]) == {"none"}
    assert {name: getattr(training, name) for name in helpers} == helpers


def test_each_change_does_what_it_says():
    from mobilenet_lab import training
    from mobilenet_lab.model import init_network

    net = init_network(1, 1, device="cpu")
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    idx, cpu = torch.arange(8), torch.device("cpu")
    plain = training.make_batch(x, idx, torch.Generator().manual_seed(0), False, cpu)
    with seeds.recipe_changed(seeds.Changes(clean_last=1, weight_decay=0.05, dropout=0.5), net, seed=0, epochs=3,
                              steps_per_epoch=2):
        generator = torch.Generator().manual_seed(0)
        batches = [training.make_batch(x, idx, generator, True, cpu) for _ in range(6)]
        assert [torch.equal(b, plain) for b in batches] == [False] * 4 + [True] * 2  # the last epoch's 2 are clean
        assert training.make_optimizer("adamw", net.parameters(), 1e-3).param_groups[0]["weight_decay"] == 0.05
        features = torch.randn(4, net.fc.in_features)
        net.train()
        undropped = torch.nn.functional.linear(features, net.fc.weight, net.fc.bias)
        assert not torch.equal(net.fc(features), undropped)  # features dropped in training
        net.eval()
        assert torch.equal(net.fc(features), undropped)
    assert not net.fc._forward_pre_hooks
    assert training.make_optimizer("adamw", net.parameters(), 1e-3).param_groups[0]["weight_decay"] == \
        training.WEIGHT_DECAY


def write_idx(path, array) -> None:
    """An IDX file as MNIST's (magic 0x0000 0x08 ndim, big-endian sizes, then the bytes), gzipped."""
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype("uint8").tobytes()))


def test_left_out_digits_are_the_training_digits_the_dataset_did_not_take(tiny_data, tmp_path):
    from helpers import digits

    from mobilenet_lab.data import load_splits

    x, y = digits()  # tiny_data's train part is the first 300 of these
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x[:400])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y[:400])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x[:1])  # read, not used
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y[:1])
    splits = load_splits(tiny_data, val_size=50)
    dev_x, dev_y = seeds.left_out_digits(tmp_path, splits)
    assert dev_x.shape == (100, 1, 28, 28)
    assert torch.equal(dev_x[:, 0], torch.from_numpy(x[300:400])) and dev_y.tolist() == y[300:400].tolist()


def test_a_change_out_of_range_is_one_line(tiny_data, tmp_path, capsys):
    for flags, start in ((["--weight-decay", "-1"], "error: --weight-decay -1 must be between 0 and 1"),
                         (["--dropout", "1.5"], "error: --dropout 1.5 must be between 0 and 0.9"),
                         (["--lr", "0"], "error: --lr 0 must be a positive number"),
                         (["--translate", "0.7"], "error: --translate 0.7 must be a share of the image side"),
                         (["--epochs", "2", "--clean-last", "3"], "error: --clean-last 3 must be between 0 and"),
                         (["--idx", str(tmp_path / "nowhere")], "error: --idx")):
        assert seeds.main(["--data", str(tiny_data), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1, err
