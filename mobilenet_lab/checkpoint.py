"""Saving and loading networks: ``save`` and ``load``. A checkpoint is a plain dict (init_network's arguments, the
weights, the run's settings, history and figures), so it loads with ``torch.load(weights_only=True)``, which refuses
pickled code; it is checked whole before use."""
import pickle
import platform
import zipfile
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import torch

from . import __version__
from .config import Config
from .errors import UserError
from .files import save_torch
from .model import MobileNetLab, init_network, pick_device

FORMAT = "mobilenet_lab.checkpoint/3"
# Every field and its type; a file lacking one (or with another type) is refused before use.
FIELDS = {"format": str, "architecture": dict, "state_dict": dict, "config": (dict, type(None)), "history": dict,
          "metrics": dict, "class_counts": (list, type(None)), "versions": dict}


def save(net: MobileNetLab, path: str | Path, config: Config | None = None, history: dict | None = None,
         metrics: dict | None = None, class_counts: list[int] | None = None, **extra) -> Path:
    """Save ``net`` to ``path`` (atomically: a failed save keeps the file it would replace), with the run's settings,
    history and metrics when given; ``extra`` fields join them (a training state, say)."""
    arch = net.architecture
    checkpoint = {"format": FORMAT, "architecture": dict(asdict(arch), input_dim=list(arch.input_dim)),
                  "state_dict": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                  "config": config.as_dict() if config is not None else None, "history": history or {},
                  "metrics": metrics or {}, "class_counts": class_counts, "versions": versions(), **extra}
    return save_torch(checkpoint, path)


def load(path: str | Path, device: torch.device | str = "auto") -> MobileNetLab:
    """The network saved at ``path``, ready to use: in eval mode, on ``device`` ("auto": the GPU when there is one)."""
    checkpoint = read_checkpoint(path)
    args = checkpoint["architecture"]
    try:
        net = init_network(args["conv_block_count"], args["mobilenet_block_count"], args["input_dim"],
                           args["num_classes"], device="cpu")
    except (KeyError, TypeError, UserError) as exc:
        raise UserError(f"{path} describes an incomplete or impossible network ({exc}): the file is damaged; retrain "
                        f"with --train") from None
    own, state = net.state_dict(), checkpoint["state_dict"]
    wrong = [k for k in own if not (isinstance(state.get(k), torch.Tensor) and state[k].shape == own[k].shape)]
    if wrong or set(state) - set(own):
        raise UserError(f"the weights in {path} do not fit the network it describes (e.g. "
                        f"{(wrong or sorted(set(state) - set(own)))[0]}): the file is damaged; retrain with --train")
    net.load_state_dict(state)
    return net.to(pick_device(device) if isinstance(device, str) else device).eval()


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict whose every field is there with its type; pickled code and other files are refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no saved model at {path}: pass --model PATH, or train one with --train --model {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path} holds Python objects other than weights and was refused for safety "
                        f"(weights_only loading): use a checkpoint written by this program") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, MemoryError) as exc:
        raise UserError(f"{path} is not a readable checkpoint ({str(exc).splitlines()[0][:120]}): "
                        f"it may be truncated; retrain with --train or restore the file") from None
    if not (isinstance(checkpoint, dict) and str(checkpoint.get("format", "")).startswith(FORMAT[:-1])):
        raise UserError(f"{path} is not a mobilenet_lab checkpoint: use a model saved by this program")
    if checkpoint["format"] != FORMAT:
        raise UserError(f"{path} is a checkpoint of format {checkpoint['format']}, not {FORMAT}: retrain it with "
                        f"--train")
    for key, kind in FIELDS.items():
        if key not in checkpoint or not isinstance(checkpoint[key], kind):
            raise UserError(f"{path} lacks a valid '{key}' field: the file is damaged or not written by this "
                            f"program; retrain with --train or restore it")
    return checkpoint


def versions() -> dict[str, str]:
    """The versions of Python and of the libraries that shape a result."""
    return {"mobilenet_lab": __version__, "python": platform.python_version(),
            **{package: version(package) for package in ("torch", "numpy", "scikit-learn")}}
