"""A grader's harness, written from the assignment's text alone and run against the one .py file of the submission:
the Dataset and a DataLoader with a batch size, the split into training and validation, ``net = init_network(...)``,
``net = train(...)`` with the nine arguments, ``save``, ``model = load(path)``, ``pred = test(net, model, x, y)``,
scikit-learn's metrics on ``pred``, and ``visualize``."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from torch import nn
from torch.utils.data import DataLoader

from mobilenet_lab.tools.submit import Names, single_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """The generated ROLL_02_02.py, imported as a module the way a grader's script imports it."""
    path = tmp_path_factory.mktemp("graded") / "21L1234_02_02.py"
    path.write_text(single_file(Names("Ali", "21L1234")), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("graded_program", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["graded_program"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def everything(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a dataset as (x, y), through a plain DataLoader."""
    return next(iter(DataLoader(dataset, batch_size=len(dataset))))


def test_the_assignments_functions_work_as_its_text_writes_them(program, tiny_data, tmp_path):
    dataset = program.MnistCsvDataset(tiny_data / "train.zip")
    image, label = dataset[0]
    assert image.shape == (1, 28, 28) and isinstance(label, int) and len(dataset) == 300
    images, labels = next(iter(DataLoader(dataset, batch_size=32, shuffle=True)))
    assert images.shape == (32, 1, 28, 28) and labels.shape == (32,)

    train_set, valid_set = dataset.split(val_size=60)
    train_set_x, train_set_y = everything(train_set)
    valid_set_x, valid_set_y = everything(valid_set)
    assert len(train_set_y) == 240 and len(valid_set_y) == 60

    net = program.init_network(1, 6, (1, 28, 28), 10)
    loss_func, optimizer = nn.CrossEntropyLoss(), torch.optim.Adam(net.parameters(), lr=0.003)
    net = program.train(net, train_set_x, train_set_y, valid_set_x, valid_set_y, 0.003, 1, loss_func, optimizer)
    assert isinstance(net, nn.Module)

    path = tmp_path / "model.pt"
    program.save(net, path)
    model = program.load(path)
    assert isinstance(model, nn.Module)

    test_set_x, test_set_y = everything(program.MnistCsvDataset(tiny_data / "test.zip"))
    pred = program.test(net, model, test_set_x, test_set_y)
    assert isinstance(pred, torch.Tensor) and pred.shape == test_set_y.shape and pred.dtype == torch.int64
    accuracy = accuracy_score(test_set_y, pred)
    assert 0 <= f1_score(test_set_y, pred, average="macro") <= 1 and confusion_matrix(test_set_y, pred).sum() == 100
    assert (pred == test_set_y).float().mean().item() == pytest.approx(accuracy)
    assert torch.equal(pred, program.test(model, None, test_set_x, test_set_y))  # the loaded model, either way

    figures = program.visualize(net, None, test_set_x, test_set_y, pred, None, tmp_path / "figures")
    assert all(p.is_file() for p in figures) and len(figures) == 4


def test_train_also_takes_the_recipes_names_and_fills_a_history(program, tiny_data):
    train_set, valid_set = program.MnistCsvDataset(tiny_data / "train.zip").split(val_size=60)
    net, history = program.init_network(4, 0, (1, 28, 28), 10, "cpu"), program.History()
    net = program.train(net, train_set.images, train_set.labels, valid_set.images, valid_set.labels, 0.003, 2,
                        "balanced-softmax", "adamw", program.Config(batch_size=64), history)
    assert isinstance(net, nn.Module) and history.epoch == [1, 2] and len(history.val_acc) == 2
