"""The root script end to end, and its answers to bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import digits, tree_hash, write_folder_part

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "FirstName_RollNumber_02_02.py"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The root script in a real process, as a user runs it."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


def run_here(*args: str) -> subprocess.CompletedProcess:
    """The root script's main() in this process (no interpreter start-up: the many bad-input
    cases stay fast); exit status and output as from a real run."""
    import contextlib
    import importlib.util
    import io

    spec = importlib.util.spec_from_file_location("root_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from mobilenet_lab.errors import run_cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run_cli(script.main, script.build_parser().parse_args([str(a) for a in args]))
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """Train 1 epoch on the tiny set, writing the model to an explicit --model path."""
    work = tmp_path_factory.mktemp("e2e")
    model = work / "model.pt"
    result = run("--data", tiny_data, "--train", "--epochs", "1", "--batch-size", "32", "--val-size", "50",
                 "--out", work / "run", "--model", model, "--name", "Ada", "--roll-number", "21L-1234")
    return result, work, model


def test_train_then_evaluate(trained, tiny_data):
    result, work, model = trained
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Name: Ada\nRoll number: 21L-1234")
    for text in ("Parameters in effect", "learning_rate", "train ", "validation", "test ", "F1 macro",
                 "confusion matrix", "parameters:"):
        assert text in out
    assert model.is_file() and (work / "run" / "model.pt").is_file()
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    for key in ("test_accuracy", "test_f1_macro", "test_loss", "confusion_matrix", "train_loss", "validation_accuracy"):
        assert key in metrics
    assert sum(map(sum, metrics["confusion_matrix"])) == 100
    assert metrics["config"]["train_size"] is None and len(metrics["history"]["epoch"]) == 1
    # The validation figures judge the kept weights after their batch-norm statistics were re-measured
    # on all the training images.
    assert "batch-norm statistics re-measured" in out
    assert metrics["validation_accuracy"] == metrics["history"]["final_val_acc"]

    again = run("--data", tiny_data, "--model", model, "--out", work / "eval")
    assert again.returncode == 0, again.stderr
    evaluated = json.loads((work / "eval" / "metrics.json").read_text())
    assert evaluated["test_accuracy"] == metrics["test_accuracy"]
    assert evaluated["confusion_matrix"] == metrics["confusion_matrix"]
    assert evaluated["train_accuracy"] == metrics["train_accuracy"]  # recorded at training time
    assert "learning_rate" not in again.stdout  # training-only parameters are not shown when evaluating


def test_help_lists_every_assignment_argument():
    out = run("--help").stdout  # a real process: --help must not need torch
    for flag in ("--data", "--train-size", "--val-size", "--test-size", "--conv-block-count", "--mobilenet-block-count",
                 "--input-dim", "--num-classes", "--visualize", "--epochs", "--train", "--learning-rate", "--batch-size",
                 "--optimizer", "--loss", "--seed", "--device", "--arch", "--model", "--name", "--roll-number"):
        assert flag in out


def make_bad_data(kind: str, base: Path, tiny_data: Path) -> Path:
    """One bad dataset folder per kind."""
    x, y = digits()
    data = base / kind
    data.mkdir()
    good_test = data / "test.zip"
    (good_test).write_bytes((tiny_data / "test.zip").read_bytes())
    train = data / "train"
    if kind == "empty":
        good_test.unlink()
    elif kind == "no-csv":
        write_folder_part(train, x[:20], y[:20])
        (train / "train.csv").unlink()
    elif kind == "two-csvs":
        write_folder_part(train, x[:20], y[:20])
        (train / "copy.csv").write_text((train / "train.csv").read_text())
    elif kind == "corrupt-zip":
        (data / "train.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    elif kind == "no-label-column":
        write_folder_part(train, x[:20], y[:20])
        rows = (train / "train.csv").read_text().splitlines()
        (train / "train.csv").write_text("\n".join(["filename,width,height"] + [r + ",28" for r in rows[1:]]))
    elif kind == "string-labels":
        write_folder_part(train, x[:20], y[:20])
        text = (train / "train.csv").read_text().replace(f",{y[3]}\n", ",seven\n", 1)
        (train / "train.csv").write_text(text)
    elif kind == "label-too-big":
        write_folder_part(train, x[:20], y[:20])
        rows = (train / "train.csv").read_text().splitlines()
        rows[2] = rows[2].split(",")[0] + ",12"
        (train / "train.csv").write_text("\n".join(rows) + "\n")
    elif kind == "missing-image":
        write_folder_part(train, x[:20], y[:20])
        (train / "train_new" / "img_4.png").unlink()
    elif kind == "undecodable-image":
        write_folder_part(train, x[:20], y[:20])
        (train / "train_new" / "img_4.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return data


BAD_DATA = {
    "empty": "is empty",
    "no-csv": "no CSV",
    "two-csvs": "candidate CSV",
    "corrupt-zip": "not a readable zip",
    "no-label-column": "no label column",
    "string-labels": "not an integer",
    "label-too-big": "not below --num-classes",
    "missing-image": "missing",
    "undecodable-image": "cannot be decoded",
}


def assert_clean_failure(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr


@pytest.mark.parametrize("kind", sorted(BAD_DATA))
def test_bad_datasets(kind, tmp_path, tiny_data):
    saved = tree_hash(ROOT / "saved_models")
    data = make_bad_data(kind, tmp_path, tiny_data)
    result = (run if kind == "missing-image" else run_here)("--data", data, "--train", "--epochs", "1", "--out", tmp_path / "run")
    assert_clean_failure(result, BAD_DATA[kind])
    assert tree_hash(ROOT / "saved_models") == saved
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize("args,expected", [
    (["--data", "{tmp}/nope"], "does not exist: give the folder that holds the train and test parts"),
    (["--data", "{tiny}/train.zip"], "is a file, not a folder"),
    (["--data", "{tiny}", "--train", "--train-size", "100000"], "more than the"),
    (["--data", "{tiny}", "--train", "--test-size", "5000"], "more than the 100 test images"),
    (["--data", "{tiny}", "--train", "--val-size", "0"], "--val-size 0 must be a positive count"),
    (["--data", "{tiny}", "--train", "--test-size", "1.5"], "--test-size 1.5 must be a positive count like 5000 or a "
                                                            "fraction up to 1"),
    (["--data", "{tiny}", "--model", "{tmp}/absent.pt"], "no saved model"),
    (["--data", "{tiny}", "--model", "{tmp}/truncated.pt"], "truncated"),
    (["--data", "{tiny}", "--model", "{tmp}/foreign.pt"], "not a mobilenet_lab checkpoint"),
    (["--data", "{tiny}", "--input-dim", "1,28"], "three positive integers"),
    (["--data", "{tiny}", "--train", "--conv-block-count", "0", "--mobilenet-block-count", "0"], "at least one block"),
    (["--data", "{tiny}", "--train", "--arch", "conv4", "--conv-block-count", "2"], "drop one of the two"),
    (["--data", "{tiny}", "--train", "--num-classes", "5"], "not below --num-classes 5"),
    (["--data", "{tiny}", "--train", "--out", "{tmp}/file.txt/run"], "cannot write to the output folder"),
    (["--data", "{tiny}", "--train", "--elastic", "9"], "--elastic 9 must be between 0 and 4"),
    (["--data", "{tiny}", "--train", "--elastic", "-1"], "--elastic -1 must be between 0 and 4"),
    (["--data", "{tiny}", "--train", "--erase", "0.5"], "unrecognized arguments: --erase"),
    (["--data", "{tiny}", "--train", "--shear", "60"], "--shear 60 must be between 0 and 45 degrees"),
    (["--data", "{tiny}", "--train", "--average-decay", "1.5"], "--average-decay 1.5 must be at least 0"),
])
def test_bad_arguments(args, expected, tmp_path, tiny_data):
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    import torch
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    (tmp_path / "file.txt").write_text("x")
    saved = tree_hash(ROOT / "saved_models")
    filled = [a.format(tmp=tmp_path, tiny=tiny_data) for a in args]
    runner = run if "nope" in args[1] else run_here  # one real process; the rest in this one
    result = runner(*filled, "--epochs", "1", *([] if "--out" in args else ["--out", tmp_path / "run"]))
    assert_clean_failure(result, expected)
    assert tree_hash(ROOT / "saved_models") == saved


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_a_device_that_is_not_here_is_one_line(device, tiny_data, tmp_path):
    import torch
    if {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}[device]:
        pytest.skip(f"{device} is here")
    result = run_here("--data", tiny_data, "--train", "--epochs", "1", "--device", device, "--out", tmp_path / "run")
    assert_clean_failure(result, f"--device {device} is not available on this machine")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_incompatible_checkpoint_flags(trained, tiny_data, tmp_path):
    _, _, model = trained
    result = run_here("--data", tiny_data, "--model", model, "--conv-block-count", "4", "--out", tmp_path / "run")
    assert_clean_failure(result, "drop --conv-block-count")
