"""The recipe over several seeds: how far one run's score can fall from the recipe's mean, and whether the
weight average's schedule matters at the end of a run.

    python -m mobilenet_lab seeds --data ./mnist --idx ../shared/data/mnist --seeds 3 4 --threads 1

Each seed trains the recipe (the Config, with any of its flags changed, e.g. --weight-decay 0.05)
through train(), as the root script does with ``--seed N``: its own validation split and initial
weights. Alongside, other weight averages follow the same run step by step (a callback) without
changing it; after training each gets batch-norm statistics of its own and is scored too:

  warm-C       decay min(C, (1+n)/(10+n)) after n steps: train()'s schedule with cap C (warm-0.999: the recipe's)
  mean-then-C  the plain mean of all steps until it spans 1/(1-C) of them, then decay C
  last-K       the plain mean of the last K epochs' steps (stochastic weight averaging)
  none         the trained weights themselves (no average)

With ``--idx`` the returned weights are also scored on the full-MNIST training digits the dataset left
out ("dev": never trained on, not the test set). Choices are made on validation and dev figures only;
the test figures are reported, never used to pick a setting or a seed.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..config import Config, add_flags, from_flags
from ..data import Splits, load_splits
from ..errors import UserError, run_cli
from ..files import write_json
from ..metrics import compute_metrics
from ..model import init_network, seed_everything, set_normalization
from ..sample import IDX_FILES, find_idx, load_idx_mnist, row_hashes
from ..training import Callback, Run, blend_into, evaluate, recalibrate_batch_norm, train, warm_up_share
from .measure import machine

Schedule = Callable[[int, int, int], float]  # (step n from 1, steps in the run, steps an epoch) -> share of the new weights


def warm(cap: float) -> Schedule:
    return lambda n, total, per_epoch: warm_up_share(n, cap)


def mean_then(cap: float) -> Schedule:
    return lambda n, total, per_epoch: max(1.0 - cap, 1.0 / n)


def last(epochs: int) -> Schedule:
    def share(n: int, total: int, per_epoch: int) -> float:
        start = total - epochs * per_epoch
        return 1.0 / (n - start) if n > start else 1.0  # before the window: follow the weights
    return share


AVERAGES: dict[str, Schedule] = {
    "warm-0.99": warm(0.99), "warm-0.995": warm(0.995), "warm-0.999": warm(0.999),
    "mean-then-0.999": mean_then(0.999), "mean-then-0.9995": mean_then(0.9995), "mean-then-0.9998": mean_then(0.9998),
    "last-3": last(3), "last-5": last(5), "last-10": last(10),
    "none": lambda n, total, per_epoch: 1.0}  # lerp with share 1 copies the weights exactly


class ShadowAverages(Callback):
    """Weight averages with the given schedules, each a copy of the network updated after every step."""

    def __init__(self, net, schedules: dict[str, Schedule], total_steps: int, steps_per_epoch: int):
        self.schedules, self.total, self.per_epoch, self.steps = schedules, total_steps, steps_per_epoch, 0
        self.modules = {name: copy.deepcopy(net) for name in schedules}

    def on_step(self, run: Run) -> None:
        self.update(run.net)

    def update(self, net) -> None:
        self.steps += 1
        now = list(net.state_dict().values())  # afresh: channels_last replaced the tensors a list taken before would hold
        for name, module in self.modules.items():
            blend_into(module.state_dict().values(), now, self.schedules[name](self.steps, self.total, self.per_epoch))


def score(net, splits: Splits) -> dict:
    """Test accuracy, macro F1 and validation accuracy of ``net``."""
    test = evaluate(net, splits.test.images, splits.test.labels)
    return {"test_accuracy": test.accuracy,
            "test_f1_macro": compute_metrics(splits.test.labels, test.labels, class_names=splits.class_names)["f1_macro"],
            "val_accuracy": evaluate(net, splits.val.images, splits.val.labels).accuracy}


def left_out_digits(idx_folder: Path, splits: Splits) -> tuple[torch.Tensor, torch.Tensor]:
    """The full-MNIST training digits (IDX files in ``idx_folder``) in neither the training nor the validation set."""
    images, labels, _, _ = load_idx_mnist(idx_folder)
    seen = torch.cat([splits.train.images, splits.val.images]).numpy().reshape(-1, *images.shape[1:])
    used = set(row_hashes(seen))
    keep = np.array([digest not in used for digest in row_hashes(images)], dtype=bool)
    return torch.from_numpy(images[keep]).unsqueeze(1), torch.from_numpy(labels[keep].astype(np.int64))


def run_seed(data: Path, config: Config, averages: list[str], idx: Path | None = None,
             split_seed: int | None = None) -> dict:
    """One recipe run with ``config.seed``: its returned weights and the shadow ``averages`` scored."""
    splits = load_splits(data, replace(config, seed=config.seed if split_seed is None else split_seed))
    seed_everything(config.seed)  # the root script's initial weights for this seed
    net = init_network(*config.block_counts, config.input_dim, config.num_classes)
    set_normalization(net, splits.train.images)
    per_epoch = -(-len(splits.train) // config.batch_size)
    shadows = ShadowAverages(net, {name: AVERAGES[name] for name in averages}, config.epochs * per_epoch, per_epoch)
    started = time.perf_counter()
    net, _ = train(net, splits.train.images, splits.train.labels, splits.val.images, splits.val.labels,
                   config=config, callbacks=[shadows])
    result = {"seed": config.seed, "split_seed": split_seed, "train_seconds": time.perf_counter() - started,
              "steps": shadows.steps, "returned": score(net, splits), "averages": {}}
    if idx is not None:
        dev_x, dev_y = left_out_digits(idx, splits)
        result["returned"].update(dev_accuracy=evaluate(net, dev_x, dev_y).accuracy, dev_digits=len(dev_y))
    for name, module in shadows.modules.items():
        recalibrate_batch_norm(module, splits.train.images)
        result["averages"][name] = score(module, splits)
    return result


def summary(runs: list[dict]) -> str:
    """Test accuracy of every average in every run, and the mean over the runs."""
    lines = [f"{'weights':<18}" + "".join(f"  seed {run['seed']:<3}" for run in runs) + "  mean"]
    for name in ["returned", *runs[0]["averages"]]:
        accuracies = [(run["returned"] if name == "returned" else run["averages"][name])["test_accuracy"] for run in runs]
        lines.append(f"{name:<18}" + "".join(f"  {a:<8.4f}" for a in accuracies) + f"  {statistics.mean(accuracies):.4f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mobilenet_lab seeds", description=__doc__.split("\n\n")[0])
    groups = {"study": p.add_argument_group("study")}
    s = groups["study"]
    s.add_argument("--data", metavar="DIR", type=Path, required=True, help="dataset folder from prepare (required)")
    s.add_argument("--seeds", metavar="N", type=int, nargs="+", default=[0], help="seeds to train, one run each (default: 0)")
    s.add_argument("--averages", metavar="NAME", nargs="*", choices=list(AVERAGES), default=list(AVERAGES),
                   help="weight averages to follow alongside; none when the flag has no names (default: all)")
    s.add_argument("--split-seed", metavar="N", type=int, help="seed of the validation split (default: each run's seed)")
    s.add_argument("--idx", metavar="DIR", type=Path, help="the MNIST IDX files the dataset was built from: also score "
                   "the returned weights on the training digits the dataset left out")
    s.add_argument("--threads", metavar="N", type=int, help="torch threads (default: torch's choice, all cores)")
    s.add_argument("--out", metavar="FILE", type=Path, default=Path("runs/seeds.json"), help="JSON file (default: %(default)s)")
    add_flags(p, groups)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(_run, args)


def _run(args: argparse.Namespace) -> int:
    if not args.data.is_dir():
        raise UserError(f"--data {args.data} is not a folder: build one with "
                        f"python -m mobilenet_lab prepare --out {args.data} --idx ../shared/data/mnist")
    config, given = from_flags(args)
    if args.idx is not None:
        if not args.idx.is_dir():
            raise UserError(f"--idx {args.idx} is not a folder: give the folder of the MNIST IDX files, "
                            f"e.g. ../shared/data/mnist")
        for key in ("train_images", "train_labels"):
            find_idx(args.idx, IDX_FILES[key])
    if args.threads is not None:
        if not 1 <= args.threads <= 256:
            raise UserError(f"--threads {args.threads} must be between 1 and 256")
        torch.set_num_threads(args.threads)
    changed = {k: getattr(config, k) for k in sorted(given)}
    report = {"command": "python -m mobilenet_lab seeds " + " ".join(args.argv), "machine": machine(),
              "config": config.as_dict(), "changed": changed, "averages": args.averages, "runs": []}
    write_json(args.out, report)  # fails now, not after the first run, when --out cannot be written
    described = "".join(f", {name.replace('_', ' ')} {value}" for name, value in changed.items())
    for seed in args.seeds:
        print(f"seed {seed}: training {config.preset} for {config.epochs} epochs with the recipe{described}", flush=True)
        run = run_seed(args.data, replace(config, seed=seed), args.averages, args.idx, args.split_seed)
        report["runs"].append(run)
        dev = (f", {run['returned']['dev_accuracy']:.4f} on the {run['returned']['dev_digits']:,} left-out digits"
               if args.idx is not None else "")
        print(f"seed {seed}: returned {run['returned']['test_accuracy']:.4f} test accuracy, "
              f"{run['returned']['test_f1_macro']:.4f} macro F1{dev} ({run['train_seconds']:.0f} s of training)",
              flush=True)
        write_json(args.out, report)  # after every seed, so a long study keeps what it has
    print(summary(report["runs"]))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
