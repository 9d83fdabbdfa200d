"""save/load round trip, atomic writes, weights-only loading, and a checkpoint's structure checked as a whole."""
from __future__ import annotations

import pytest
import torch

from mobilenet_lab.checkpoint import FORMAT, load, open_checkpoint, read_checkpoint, save
from mobilenet_lab.config import Config
from mobilenet_lab.errors import UserError
from mobilenet_lab.model import init_network
from mobilenet_lab.training import test as run_test  # the assignment's test(); renamed so pytest does not collect it


@pytest.fixture
def net():
    torch.manual_seed(0)
    model = init_network(1, 2, device="cpu")
    model.train()
    model(torch.rand(16, 1, 28, 28))  # move the BN running stats off their initial values
    return model.eval()


def test_round_trip_gives_identical_predictions(tmp_path, net):
    x = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    config = Config(learning_rate=0.1, conv_blocks=1, mobilenet_blocks=2)
    path = save(net, tmp_path / "m.pt", config=config, history={"epoch": [1], "val_acc": [0.5], "best_epoch": 1},
                metrics={"test_accuracy": 0.9})
    saved = open_checkpoint(path, device="cpu")
    loaded = saved.net
    assert not loaded.training
    assert torch.equal(loaded(x), net(x))
    assert saved.config == config and saved.config.learning_rate == 0.1
    assert saved.metrics["test_accuracy"] == 0.9
    assert loaded.config.mobilenet_block_count == 2
    assert saved.history["best_epoch"] == 1
    assert "torch" in saved.versions
    assert torch.equal(load(path, device="cpu")(x), net(x))
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


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": Evil()}, path)
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


def crafted(tmp_path, net, change) -> str:
    """A checkpoint of ``net`` with the right format tag and one part changed: the error it gets."""
    ckpt = torch.load(save(net, tmp_path / "good.pt"), weights_only=True)
    change(ckpt)
    torch.save(ckpt, tmp_path / "crafted.pt")
    with pytest.raises(UserError) as err:
        load(tmp_path / "crafted.pt")
    return str(err.value)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("model_args"), "lacks a valid 'model_args' field"),
    (lambda c: c.pop("config"), "lacks a valid 'config' field"),
    (lambda c: c.update(state_dict=[1, 2]), "lacks a valid 'state_dict' field"),
    (lambda c: c["model_args"].pop("input_dim"), "incomplete architecture"),
    (lambda c: c["model_args"].update(mobilenet_block_count=100000), "impossible network"),
    (lambda c: c["model_args"].update(num_classes=7), "do not fit"),
    (lambda c: c["state_dict"].update({"fc.weight": torch.zeros(3, 3)}), "do not fit"),
    (lambda c: c.update(class_names=["a"]), "names 1 classes"),
    (lambda c: c.update(config={"epochs": "many"}), "settings this program does not accept"),
    (lambda c: c.update(format="mobilenet_lab.checkpoint/1"), "retrain it"),
])
def test_a_crafted_checkpoint_is_refused_before_anything_is_built(tmp_path, net, change, message):
    assert message in crafted(tmp_path, net, change)
