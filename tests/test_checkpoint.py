"""save/load round trip, atomic writes, weights-only loading, and a checkpoint's structure checked as a whole."""
from __future__ import annotations

import pytest
import torch

from mobilenet_lab.checkpoint import FORMAT, load, read_checkpoint, save
from mobilenet_lab.tools.train import saved_config
from mobilenet_lab.config import Config
from mobilenet_lab.errors import UserError
from mobilenet_lab.evaluation import test as run_test  # the assignment's test(); renamed so pytest does not collect it
from mobilenet_lab.model import init_network


@pytest.fixture
def net():
    torch.manual_seed(0)
    model = init_network(1, 2, device="cpu")
    model.train()
    model(torch.rand(16, 1, 28, 28))  # move the BN running stats off their initial values
    return model.eval()


def test_round_trip_gives_identical_predictions(tmp_path, net):
    x = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    config = Config(learning_rate=0.1, conv_block_count=1, mobilenet_block_count=2)
    path = save(net, tmp_path / "m.pt", config=config, history={"epoch": [1], "val_acc": [0.5], "best_epoch": 1},
                metrics={"train_accuracy": 0.9})
    checkpoint = read_checkpoint(path)
    loaded = load(path, device="cpu")
    assert not loaded.training
    assert torch.equal(loaded(x), net(x))
    assert saved_config(checkpoint, path) == config and saved_config(checkpoint, path).learning_rate == 0.1
    assert checkpoint["metrics"]["train_accuracy"] == 0.9 and checkpoint["history"]["best_epoch"] == 1
    assert loaded.architecture.mobilenet_block_count == 2 and "torch" in checkpoint["versions"]
    # test() with a saved model's path, or the loaded network, as `model` predicts with that model.
    fresh = init_network(1, 2, device="cpu")
    for model in (path, loaded):
        pred = run_test(fresh, model, x)
        assert pred.dtype == torch.int64 and torch.equal(pred, net(x).argmax(1))


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


def crafted(tmp_path, net, change) -> str:
    """A checkpoint of ``net`` with the right format tag and one part changed: the error it gets."""
    ckpt = torch.load(save(net, tmp_path / "good.pt"), weights_only=True)
    change(ckpt)
    torch.save(ckpt, tmp_path / "crafted.pt")
    with pytest.raises(UserError) as err:
        load(tmp_path / "crafted.pt")
    return str(err.value)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("architecture"), "lacks a valid 'architecture' field"),
    (lambda c: c.pop("config"), "lacks a valid 'config' field"),
    (lambda c: c.update(state_dict=[1, 2]), "lacks a valid 'state_dict' field"),
    (lambda c: c["architecture"].pop("input_dim"), "incomplete or impossible network"),
    (lambda c: c["architecture"].update(mobilenet_block_count=100000), "incomplete or impossible network"),
    (lambda c: c["architecture"].update(num_classes=7), "do not fit"),
    (lambda c: c["state_dict"].update({"fc.weight": torch.zeros(3, 3)}), "do not fit"),
    (lambda c: c.update(format="mobilenet_lab.checkpoint/2"), "retrain it"),
])
def test_a_crafted_checkpoint_is_refused_before_anything_is_built(tmp_path, net, change, message):
    assert message in crafted(tmp_path, net, change)


def test_settings_a_program_does_not_accept_are_refused_when_read(tmp_path, net):
    path = save(net, tmp_path / "m.pt", config=Config())
    checkpoint = read_checkpoint(path)
    checkpoint["config"]["epochs"] = "many"
    with pytest.raises(UserError, match="settings this program does not accept"):
        saved_config(checkpoint, path)
