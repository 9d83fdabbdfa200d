"""save/load round trip, atomic writes, weights-only loading."""
from __future__ import annotations


import pytest
import torch

from mobilenet_lab import init_network, load, save
from mobilenet_lab import test as run_test  # the assignment's test(); renamed so pytest does not collect it
from mobilenet_lab.checkpoint import read_checkpoint
from mobilenet_lab.errors import UserError


@pytest.fixture
def net():
    torch.manual_seed(0)
    model = init_network(1, 2, device="cpu")
    model.train()
    model(torch.rand(16, 1, 28, 28))  # move the BN running stats off their initial values
    model.history = {"epoch": [1], "val_acc": [0.5], "best_epoch": 1}
    return model.eval()


def test_round_trip_gives_identical_predictions(tmp_path, net):
    x = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    path = save(net, tmp_path / "m.pt", train_args={"lr": 0.1}, metrics={"test_accuracy": 0.9}, preset="custom")
    loaded = load(path, device="cpu")
    assert not loaded.training
    assert torch.equal(loaded(x), net(x))
    assert loaded.checkpoint["train_args"]["lr"] == 0.1
    assert loaded.checkpoint["metrics"]["test_accuracy"] == 0.9
    assert loaded.checkpoint["model_args"]["mobilenet_block_count"] == 2
    assert loaded.history["best_epoch"] == 1
    assert "torch" in loaded.checkpoint["versions"]
    # test() with a checkpoint path as `model` puts the weights into a fresh net.
    fresh = init_network(1, 2, device="cpu")
    pred = run_test(fresh, path, x, None)
    assert torch.equal(pred.labels, net(x).argmax(1))


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, net):
    path = tmp_path / "m.pt"
    save(net, path)
    before = path.read_bytes()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        save(net, blocker / "m.pt")  # its folder is a file
    save(net, path)  # overwrite in place: old bytes replaced whole, by rename
    assert path.read_bytes() != b"" and load(path, device="cpu") is not None
    assert len(before) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "m.pt"]


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path, net):
    path = tmp_path / "evil.pt"
    torch.save({"format": "mobilenet_lab.checkpoint/1", "payload": Evil()}, path)
    with pytest.raises(UserError, match="refused"):
        read_checkpoint(path)


def test_truncated_and_foreign_files(tmp_path, net):
    path = save(net, tmp_path / "m.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated"):
        load(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(UserError, match="not a mobilenet_lab checkpoint"):
        load(foreign)
    with pytest.raises(UserError, match="no saved model"):
        load(tmp_path / "absent.pt")
    with pytest.raises(UserError, match="do not fit"):
        run_test(init_network(4, 0, device="cpu"), path, torch.zeros(1, 1, 28, 28), None)
