"""Ctrl-C during training, resuming with python -m mobilenet_lab train --resume, and run-to-run reproducibility."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import tree_hash
from test_cli import ROOT, SCRIPT, run_here

EPOCHS = "12"


def train_args(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--epochs", EPOCHS, "--batch-size", "64", "--val-size", "50", "--train-size", "150",
            "--seed", "3", "--out", str(out)]


def tool(*args) -> subprocess.CompletedProcess:
    """python -m mobilenet_lab train in this process (the bad-input cases stay fast)."""
    import contextlib
    import io

    from mobilenet_lab.tools.train import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def interrupt_after_first_checkpoint(command: list[str], last: Path) -> subprocess.CompletedProcess:
    """Start a training process, send it SIGINT once checkpoint-last.pt exists (or after its first epoch line)."""
    # A shell's background job starts with SIGINT ignored, and Python keeps that: give the child the default
    # disposition so that Ctrl-C reaches it however the tests were launched.
    proc = subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"), cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert last.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def test_sigint_keeps_the_last_epoch_and_resume_reaches_the_same_result(tiny_data, tmp_path):
    saved = tree_hash(ROOT / "saved_models")
    out = tmp_path / "interrupted"
    last = out / "checkpoint-last.pt"
    stopped = interrupt_after_first_checkpoint(["-m", "mobilenet_lab", "train", *train_args(tiny_data, out)], last)
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert "--resume" in stopped.stderr and "checkpoint-last.pt" in stopped.stderr and "checkpoint-best.pt" in stopped.stderr
    assert (out / "checkpoint-best.pt").exists() and not (out / "model.pt").exists()
    assert tree_hash(ROOT / "saved_models") == saved

    resumed = tool("--resume", last)
    assert resumed.returncode == 0, resumed.stderr
    straight = tool(*train_args(tiny_data, tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert a["history"]["val_loss"] == b["history"]["val_loss"] and a["history"]["train_loss"] == b["history"]["train_loss"]
    assert a["test_loss"] == b["test_loss"] and a["confusion_matrix"] == b["confusion_matrix"]
    # The root script trains the same network, figure for figure.
    root = run_here("--train", *train_args(tiny_data, tmp_path / "root"))
    assert root.returncode == 0, root.stderr
    c = json.loads((tmp_path / "root" / "metrics.json").read_text())
    assert c["history"]["train_loss"] == b["history"]["train_loss"] and c["test_loss"] == b["test_loss"]


def test_ctrl_c_in_the_root_script_is_one_line_and_saves_nothing(tiny_data, tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"the previous model")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--train", "--model", str(target),
                             *train_args(tiny_data, tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (tmp_path / "run" / ".lock").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted: nothing was saved by this run" in stderr, stderr
    assert "Traceback" not in stderr and target.read_bytes() == b"the previous model"


def test_resume_refuses_a_finished_run_and_a_finished_model(tmp_path, tiny_data):
    out = tmp_path / "done"
    assert tool("--data", tiny_data, "--epochs", "1", "--out", out).returncode == 0
    result = tool("--resume", out / "checkpoint-last.pt")
    assert result.returncode == 2 and "already finished" in result.stderr
    result = tool("--resume", out / "model.pt")
    assert result.returncode == 2 and "not a training state" in result.stderr


def test_a_crafted_training_state_is_refused_by_resume(tmp_path, tiny_data):
    import torch
    out = tmp_path / "run"
    stopped = interrupt_after_first_checkpoint(["-m", "mobilenet_lab", "train", *train_args(tiny_data, out)],
                                               out / "checkpoint-last.pt")
    assert stopped.returncode == 130, stopped.stderr
    last = out / "checkpoint-last.pt"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["trainer_state"]["optimizer"]
    torch.save(ckpt, last)
    result = tool("--resume", last)
    assert result.returncode == 2 and "incomplete training state (optimizer)" in result.stderr


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
    from mobilenet_lab.checkpoint import read_checkpoint
    saved = read_checkpoint(tmp_path / "run" / "model.pt")
    assert saved["config"]["seed"] == 7 and saved["versions"]["torch"]


def test_a_bfloat16_run_resumes_to_the_same_figures(tiny_data, tmp_path):
    """Stopped after its first epoch and resumed from checkpoint-last.pt, a run in bfloat16 autocast ends with the
    weights and figures of the run that was never stopped."""
    import torch

    from mobilenet_lab.config import Config
    from mobilenet_lab.data import load_splits
    from mobilenet_lab.experiments.measure import cpu_has_bf16
    from mobilenet_lab.tools.train import read_resume_state, train_with_checkpoints

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bfloat16 instructions")
    config = Config(conv_block_count=4, mobilenet_block_count=0, epochs=3, precision="bf16", batch_size=64)
    splits = load_splits(tiny_data, config)
    info = {"data": "", "model": "", "model_given": False}

    class Stop:
        def on_epoch_end(self, run):
            if run.epoch == 1:
                raise KeyboardInterrupt

    straight_net, straight = train_with_checkpoints(config, splits, tmp_path / "a", info)
    with pytest.raises(Exception):
        train_with_checkpoints(config, splits, tmp_path / "b", info, callbacks=[Stop()])
    _, state, _ = read_resume_state(tmp_path / "b" / "checkpoint-last.pt")
    resumed_net, resumed = train_with_checkpoints(config, splits, tmp_path / "b", info, state)
    assert resumed.train_loss == straight.train_loss and resumed.val_loss == straight.val_loss
    assert all(torch.equal(a, b) for a, b in zip(resumed_net.state_dict().values(), straight_net.state_dict().values()))
