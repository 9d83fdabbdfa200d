"""Saving and loading models: ``save`` and ``load``, and the saver a training run calls after each epoch.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so it loads with
``torch.load(weights_only=True)``, which refuses pickled code. It carries what is needed to
rebuild and use the model: the architecture, the weights (input normalisation included), the
class names, the run's Config, its history and metrics, and the library versions. Its whole
structure is checked before anything is built from it. Every write is atomic (files.py)."""
import pickle
import platform
import zipfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .config import Config
from .errors import UserError
from .files import save_torch
from .model import MobileNetLab, init_network, pick_device

FORMAT = "mobilenet_lab.checkpoint/2"
# Every field and its type; a file lacking one (or with another type) is refused before use.
RESUME_FIELDS = {"model": dict, "optimizer": dict, "scheduler": dict, "generator": torch.Tensor,
                 "torch_rng": torch.Tensor, "history": dict, "epoch": int, "step": int, "average_steps": int}
FIELDS = {"format": str, "model_args": dict, "state_dict": dict, "class_names": list, "config": (dict, type(None)),
          "history": dict, "metrics": dict, "class_counts": (list, type(None)), "versions": dict, "run": dict}


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape a result, from the installed packages' metadata."""
    found = {"mobilenet_lab": __version__, "python": platform.python_version(), "torch": str(torch.__version__)}
    for package in ("torchvision", "numpy", "scikit-learn"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _plain(value):
    """Numbers, strings, lists, dicts and tensors only, so that the file loads with weights_only=True."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor) or value is None or type(value) in (bool, int, float, str):
        return value
    return value.item() if hasattr(value, "item") else str(value)


def make_checkpoint(net: MobileNetLab, class_names: list[str] | None = None, config: Config | None = None,
                    history: dict | None = None, metrics: dict | None = None, class_counts: list[int] | None = None,
                    run: dict | None = None) -> dict:
    """The checkpoint dict of ``net`` (weights on the CPU) and what describes it."""
    return {"format": FORMAT, "model_args": net.config.as_dict(),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
            "class_names": list(class_names or [str(i) for i in range(net.config.num_classes)]),
            "config": config.as_dict() if config is not None else None, "history": _plain(history or {}),
            "metrics": _plain(metrics or {}), "class_counts": class_counts, "versions": versions(),
            "run": _plain(run or {})}


def save(net: MobileNetLab, path: str | Path, class_names: list[str] | None = None, config: Config | None = None,
         history: dict | None = None, metrics: dict | None = None, class_counts: list[int] | None = None,
         run: dict | None = None) -> Path:
    """Save ``net`` with everything needed to rebuild and use it, atomically."""
    return save_torch(make_checkpoint(net, class_names, config, history, metrics, class_counts, run), path)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict whose every field is there with its type; refuses pickled code and other files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no saved model at {path}: pass --model PATH, or train one with --train --model {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path} holds Python objects other than weights and was refused for safety "
                        f"(weights_only loading): use a checkpoint written by this program") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, MemoryError) as exc:
        raise UserError(f"{path} is not a readable checkpoint ({str(exc).splitlines()[0][:120]}): "
                        f"it may be truncated; retrain with --train or restore the file") from exc
    if not isinstance(ckpt, dict) or not str(ckpt.get("format", "")).startswith("mobilenet_lab.checkpoint/"):
        raise UserError(f"{path} is not a mobilenet_lab checkpoint: use a model saved by this program")
    if ckpt["format"] != FORMAT:
        raise UserError(f"{path} is a checkpoint of format {ckpt['format']}, not {FORMAT}: retrain it with --train")
    for key, kind in FIELDS.items():
        if key not in ckpt or not isinstance(ckpt[key], kind):
            raise UserError(f"{path} lacks a valid '{key}' field: the file is damaged or not written by this "
                            f"program; retrain with --train or restore it")
    return ckpt


@dataclass
class SavedModel:
    """A checkpoint, read and checked: the network (eval mode) and what the file says about it."""
    net: MobileNetLab
    class_names: list[str]
    config: Config | None
    history: dict
    metrics: dict
    class_counts: list[int] | None
    versions: dict
    run: dict
    trainer_state: dict | None


def build_net(ckpt: dict, where: str) -> MobileNetLab:
    """The network a checked checkpoint describes, its weights loaded after their shapes are checked."""
    args = ckpt["model_args"]
    try:
        net = init_network(args["conv_block_count"], args["mobilenet_block_count"], args["input_dim"],
                           args["num_classes"], device="cpu")
    except (KeyError, TypeError) as exc:
        raise UserError(f"{where} has an incomplete architecture ({exc}): the file is damaged; retrain with --train")
    except UserError as exc:
        raise UserError(f"{where} describes an impossible network ({exc}): the file is damaged") from None
    load_weights_into(net, ckpt["state_dict"], where)
    if len(ckpt["class_names"]) != net.config.num_classes:
        raise UserError(f"{where} names {len(ckpt['class_names'])} classes for a network of "
                        f"{net.config.num_classes}: the file is damaged; retrain with --train")
    return net


def open_checkpoint(path: str | Path, device: torch.device | str | None = None) -> SavedModel:
    ckpt = read_checkpoint(path)
    net = build_net(ckpt, str(path)).to(device or pick_device()).eval()
    try:
        config = Config.from_dict(ckpt["config"]) if ckpt["config"] is not None else None
    except (UserError, TypeError) as exc:
        raise UserError(f"{path} holds settings this program does not accept ({exc}): retrain with --train") from None
    return SavedModel(net, [str(c) for c in ckpt["class_names"]], config, ckpt["history"], ckpt["metrics"],
                      ckpt["class_counts"], ckpt["versions"], ckpt["run"], ckpt.get("trainer_state"))


def load(path: str | Path, device: torch.device | str | None = None) -> MobileNetLab:
    """Load a model saved by :func:`save`, ready to use (eval mode, on ``device``)."""
    return open_checkpoint(path, device).net


def load_weights_into(net: nn.Module, model, where: str = "the saved model") -> nn.Module:
    """Put trained weights into ``net``: from a checkpoint path, a state dict or another network, after checking that
    every tensor's name and shape fit the network."""
    if isinstance(model, (str, Path)):
        state, where = read_checkpoint(model)["state_dict"], str(model)
    elif isinstance(model, nn.Module):
        state = model.state_dict()
    elif isinstance(model, dict):
        state = model.get("state_dict", model)
    else:
        raise UserError(f"model must be a checkpoint path, a state dict or a network, not {type(model).__name__}")
    own = net.state_dict()
    wrong = [k for k in own if not (isinstance(state.get(k), torch.Tensor) and state[k].shape == own[k].shape)]
    if wrong or set(state) - set(own):
        raise UserError(f"the weights in {where} do not fit this network's architecture (e.g. "
                        f"{(wrong or sorted(set(state) - set(own)))[0]}): build the network with the saved "
                        f"model's block counts, input_dim and num_classes, or retrain")
    net.load_state_dict(state)
    return net


class TrainingSaver:
    """A training callback that keeps, after every epoch, atomically:

    * ``checkpoint-last.pt``: the whole training state, from which ``--resume`` continues to the
      same result an uninterrupted run reaches;
    * ``checkpoint-best.pt``: the best-validation weights so far, loadable with :func:`load`.

    A run stopped by Ctrl-C or a crash therefore loses at most the epoch in progress."""

    def __init__(self, run_dir: str | Path, class_names: list[str], class_counts: list[int], run: dict):
        self.run_dir, self.class_names, self.class_counts, self.run = Path(run_dir), class_names, class_counts, run
        self.last_path, self.best_path = self.run_dir / "checkpoint-last.pt", self.run_dir / "checkpoint-best.pt"
        self.epoch = self.epochs = 0

    def on_epoch_end(self, run) -> None:
        history = run.history.as_dict()
        if run.history.best_epoch == run.epoch:
            save(run.judged, self.best_path, self.class_names, run.config, history, None, self.class_counts, self.run)
        last = make_checkpoint(run.judged, self.class_names, run.config, history, None, self.class_counts, self.run)
        last["trainer_state"] = run.state_dict()
        save_torch(last, self.last_path)
        self.epoch, self.epochs = run.epoch, run.config.epochs


def read_resume_state(path: str | Path) -> SavedModel:
    """The checkpoint-last.pt of an interrupted run, with its Config and training state."""
    saved = open_checkpoint(path, "cpu")
    if saved.trainer_state is None or saved.config is None:
        raise UserError(f"{path} holds a finished model, not a training state: resume from the run's "
                        f"checkpoint-last.pt")
    state = saved.trainer_state
    missing = [k for k, kind in RESUME_FIELDS.items() if not isinstance(state.get(k), kind)]
    if missing or not {"data", "model", "model_given", "visualize"} <= set(saved.run):
        raise UserError(f"{path} holds an incomplete training state ({', '.join(missing) or 'run'}): the file is "
                        f"damaged; start the run again with --train")
    return saved
