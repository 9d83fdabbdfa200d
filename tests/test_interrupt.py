"""Ctrl-C during training, --resume, and run-to-run reproducibility."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import tree_hash
from test_cli import ROOT, SCRIPT, run_here

EPOCHS = "12"


def train_args(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--train", "--epochs", EPOCHS, "--batch-size", "64", "--val-size", "50",
            "--train-size", "150", "--seed", "3", "--out", str(out)]


def test_sigint_saves_state_and_resume_reaches_the_same_result(tiny_data, tmp_path):
    saved = tree_hash(ROOT / "saved_models")
    out = tmp_path / "interrupted"
    # A shell's background job starts with SIGINT ignored, and Python keeps that: give the
    # child the default disposition so that Ctrl-C reaches it however the tests were launched.
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *train_args(tiny_data, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    last = out / "checkpoint-last.pt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert last.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stderr and "checkpoint-last.pt" in stderr and "checkpoint-best.pt" in stderr
    assert (out / "checkpoint-best.pt").exists() and not (out / "model.pt").exists()
    assert tree_hash(ROOT / "saved_models") == saved

    resumed = run_here("--resume", last)
    assert resumed.returncode == 0, resumed.stderr
    straight = run_here(*train_args(tiny_data, tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert a["history"]["val_loss"] == b["history"]["val_loss"]
    assert a["test_loss"] == b["test_loss"] and a["confusion_matrix"] == b["confusion_matrix"]
    # Same seed and arguments, run after run: identical figures (the straight run is the second one).
    assert a["history"]["train_loss"] == b["history"]["train_loss"]


def test_resume_refuses_a_finished_model(tmp_path, tiny_data):
    out = tmp_path / "done"
    assert run_here("--data", tiny_data, "--train", "--epochs", "1", "--out", out).returncode == 0
    result = run_here("--resume", out / "checkpoint-last.pt")
    assert result.returncode == 2 and "already finished" in result.stderr
    result = run_here("--resume", out / "model.pt")
    assert result.returncode == 2 and "not a training state" in result.stderr


def test_a_diverging_loss_stops_cleanly_and_saves_nothing(tmp_path, tiny_data):
    saved = tree_hash(ROOT / "saved_models")
    target = tmp_path / "model.pt"
    target.write_bytes(b"the previous model")
    result = run_here("--data", tiny_data, "--train", "--epochs", "2", "--learning-rate", "1e6", "--optimizer", "sgd",
                      "--model", target, "--out", tmp_path / "run")
    assert result.returncode == 2, result.stderr
    assert "the loss became" in result.stderr and "lower the learning rate" in result.stderr
    assert "Traceback" not in result.stderr
    assert target.read_bytes() == b"the previous model"  # the previous saved model is untouched
    assert tree_hash(ROOT / "saved_models") == saved


def test_seed_and_library_versions_are_printed_and_stored(tmp_path, tiny_data):
    result = run_here("--data", tiny_data, "--train", "--epochs", "1", "--train-size", "60", "--val-size", "20",
                      "--seed", "7", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "seed" in result.stdout and "Libraries: " in result.stdout and "torch " in result.stdout
    from mobilenet_lab.checkpoint import open_checkpoint
    saved = open_checkpoint(tmp_path / "run" / "model.pt", device="cpu")
    assert saved.config.seed == 7
    assert saved.versions["torch"]


def test_a_bfloat16_run_resumes_to_the_same_figures(tiny_data, tmp_path):
    """Stopped after its first epoch and resumed from checkpoint-last.pt, a run in bfloat16 autocast ends
    with the weights and figures of the run that was never stopped."""
    import pytest
    import torch

    from mobilenet_lab.checkpoint import TrainingSaver, read_resume_state
    from mobilenet_lab.config import Config
    from mobilenet_lab.data import load_splits
    from mobilenet_lab.model import cpu_has_bf16, init_network, seed_everything, set_normalization
    from mobilenet_lab.training import Callback, train

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bfloat16 instructions")
    config = Config(arch="conv4", epochs=3, precision="bf16", batch_size=64)
    splits = load_splits(tiny_data, config)

    class Stop(Callback):
        def on_epoch_end(self, run):
            if run.epoch == 1:
                raise KeyboardInterrupt

    def run(callbacks, resume=None):
        seed_everything(0)
        net = init_network(*config.block_counts, device="cpu")
        set_normalization(net, splits.train.images)
        return train(net, splits.train.images, splits.train.labels, splits.val.images, splits.val.labels,
                     config=config, callbacks=callbacks, resume=resume)

    straight_net, straight = run([])
    saver = TrainingSaver(tmp_path, splits.class_names, splits.train.class_counts(10),
                          {"data": "", "model": "", "model_given": False, "visualize": False})
    try:
        run([saver, Stop()])
    except KeyboardInterrupt:
        pass
    resumed_net, resumed = run([], read_resume_state(saver.last_path).trainer_state)
    assert resumed.train_loss == straight.train_loss and resumed.val_loss == straight.val_loss
    assert all(torch.equal(a, b) for a, b in zip(resumed_net.state_dict().values(), straight_net.state_dict().values()))
