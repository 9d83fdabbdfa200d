"""mobilenet_lab: MNIST classification with MobileNet v1 depthwise-separable blocks.

The assignment's functions: ``MnistCsvDataset`` / ``load_splits`` (data.py), ``ConvDw`` and
``init_network`` (model.py), ``train`` and ``test`` (training.py), ``save`` and ``load``
(checkpoint.py), ``visualize`` (figures.py). No submodule shares a name with a function, so
``mobilenet_lab.train`` is always the function.

Names are imported on first use, so that ``--help`` and the light modules (errors, student)
start without loading torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "checkpoint": ("TrainingSaver", "load", "save", "versions"),
    "data": ("MnistCsvDataset", "load_splits", "sample_dataset"),
    "errors": ("Interrupted", "UserError"),
    "metrics": ("compute_metrics", "format_metrics"),
    "model": ("PRESETS", "ConvDw", "conv_block", "count_parameters", "init_network", "seed_everything",
              "set_normalization"),
    "runs": ("adopt_checkpoint", "describe_splits", "finish_run", "interrupted", "make_run_dir",
             "resolve_settings", "save_trained"),
    "training": ("Predictions", "evaluate", "test", "train"),
    "figures": ("visualize",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'mobilenet_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
