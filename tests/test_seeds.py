"""The seeds study: a tiny study writes its JSON, it trains what train() trains, its dev digits are exactly the
training digits the dataset left out, and bad flags get one line."""
from __future__ import annotations

import contextlib
import io
import json

import torch

from mobilenet_lab.experiments import seeds


def test_a_tiny_study_writes_its_figures(tiny_data, tmp_path):
    out = tmp_path / "seeds.json"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = seeds.main(["--data", str(tiny_data), "--seeds", "0", "1", "--epochs", "2", "--weight-decay", "0.05",
                             "--out", str(out)])
    assert status == 0, stderr.getvalue()
    report = json.loads(out.read_text())
    assert [run["seed"] for run in report["runs"]] == [0, 1]
    assert report["changed"] == {"epochs": 2, "weight_decay": 0.05} and report["config"]["weight_decay"] == 0.05
    assert all(0 <= f <= 1 for run in report["runs"] for f in run["returned"].values())
    assert "test accuracy over 2 seeds" in stdout.getvalue() and f"written to {out}" in stdout.getvalue()


def test_a_missing_dataset_is_one_line(tmp_path, capsys):
    assert seeds.main(["--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data") and "prepare" in err and err.count("\n") == 1


def test_a_setting_out_of_range_is_one_line(tiny_data, tmp_path, capsys):
    for flags, start in ((["--shear", "50"], "error: --shear 50 must be between 0 and 45"),
                         (["--weight-decay", "-1"], "error: --weight-decay -1 must be between 0 and 1"),
                         (["--learning-rate", "0"], "error: --learning-rate 0 must be a positive number"),
                         (["--translate", "0.7"], "error: --translate 0.7 must be a share of the image side"),
                         (["--idx", str(tmp_path / "nowhere")], "error: --idx")):
        assert seeds.main(["--data", str(tiny_data), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1, err


def test_the_study_trains_what_the_root_script_trains(tiny_data):
    from mobilenet_lab.config import Config
    from mobilenet_lab.data import load_splits
    from mobilenet_lab.model import init_network, seed_everything, set_normalization
    from mobilenet_lab.training import train

    config = Config(epochs=1)
    studied = seeds.run_seed(tiny_data, config)
    splits = load_splits(tiny_data, config)
    seed_everything(0)
    net = init_network(*config.block_counts)
    set_normalization(net, splits.train.images)
    net, _ = train(net, splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, config=config)
    assert seeds.score(net, splits) == studied["returned"]


def write_idx(path, array) -> None:
    """An IDX file as MNIST's (magic 0x0000 0x08 ndim, big-endian sizes, then the bytes), gzipped."""
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype("uint8").tobytes()))


def test_left_out_digits_are_the_training_digits_the_dataset_did_not_take(tiny_data, tmp_path):
    from helpers import digits

    from mobilenet_lab.config import Config
    from mobilenet_lab.data import load_splits

    x, y = digits()  # tiny_data's train part is the first 300 of these
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x[:400])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y[:400])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x[:1])  # read, not used
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y[:1])
    splits = load_splits(tiny_data, Config(val_size=50))
    dev_x, dev_y = seeds.left_out_digits(tmp_path, splits)
    assert dev_x.shape == (100, 1, 28, 28)
    assert torch.equal(dev_x[:, 0], torch.from_numpy(x[300:400])) and dev_y.tolist() == y[300:400].tolist()
