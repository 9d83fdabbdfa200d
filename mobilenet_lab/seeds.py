"""The default recipe over several seeds: how far one run's test score can fall from the
recipe's mean, and whether the weight average's schedule matters at the end of a run.

    python -m mobilenet_lab.seeds --data ./mnist --seeds 3 4 --threads 1 --out runs/seeds-3-4.json

Each seed trains a preset with the recipe (mobilenet_lab.recipe) through train(), as the
root script does with ``--seed N``: its own validation split (``load_splits(seed=N)``), the
same initial weights. What train() returns is scored on the test images. Alongside, other
weight averages follow the same run step by step (``train(on_step=...)``) without changing
it; after training each gets its batch-norm statistics re-measured on the training images,
as train() does for its own average, and is scored on validation and test:

  warm-C       decay min(C, (1+n)/(10+n)) after n steps: train()'s schedule with cap C
               (warm-0.999 is the recipe's own average)
  mean-then-C  the plain mean of all steps until it spans 1/(1-C) of them, then decay C
  last-K       the plain mean of the last K epochs' steps (stochastic weight averaging)
  none         the trained weights themselves (no average)

``--erase`` sets the share of training images with a random box blanked (training.random_erase)
and ``--shear`` the largest random slant in degrees, as the root script's flags do; otherwise
every setting is the recipe's.

Test figures here are for analysis only: they pick no seed and no setting of the saved
models. Two processes with ``--threads 1`` use a 2-core machine best (one seed each).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .errors import UserError, run_cli
from .recipe import DEFAULTS

Schedule = Callable[[int, int, int], float]  # (step n from 1, steps in the run, steps an epoch) -> share of the new weights


def warm(cap: float) -> Schedule:
    from .training import warm_up_share
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
    "mean-then-0.999": mean_then(0.999), "mean-then-0.9995": mean_then(0.9995),
    "mean-then-0.9998": mean_then(0.9998), "last-3": last(3), "last-5": last(5), "last-10": last(10),
    "none": lambda n, total, per_epoch: 1.0}  # lerp with share 1 copies the weights exactly


class ShadowAverages:
    """Weight averages with the given schedules, each a copy of the network updated after every step."""

    def __init__(self, net, schedules: dict[str, Schedule], total_steps: int, steps_per_epoch: int):
        self.schedules, self.total, self.per_epoch, self.steps = schedules, total_steps, steps_per_epoch, 0
        self.modules = {name: copy.deepcopy(net) for name in schedules}

    def update(self, net) -> None:
        from .training import blend_into

        self.steps += 1
        # the state dict afresh at every step: train() moves the network to channels_last,
        # which replaces the tensors a list taken before training would hold
        now = list(net.state_dict().values())
        for name, module in self.modules.items():
            blend_into(module.state_dict().values(), now, self.schedules[name](self.steps, self.total, self.per_epoch))


def score(net, splits) -> dict:
    """Test accuracy, macro F1 and validation accuracy of ``net``."""
    from .metrics import compute_metrics
    from .training import evaluate

    test = evaluate(net, splits.test_x, splits.test_y)
    return {"test_accuracy": test.accuracy,
            "test_f1_macro": compute_metrics(splits.test_y, test.labels, class_names=splits.class_names)["f1_macro"],
            "val_accuracy": evaluate(net, splits.val_x, splits.val_y).accuracy}


def run_seed(data: Path, seed: int, arch: str, epochs: int, erase: float = DEFAULTS["erase"],
             shear: float = DEFAULTS["shear"]) -> dict:
    """One recipe run with ``seed``, its returned weights and every shadow average scored."""
    import math

    from .data import load_splits
    from .model import PRESETS, init_network, seed_everything, set_normalization
    from .training import recalibrate_batch_norm, train

    splits = load_splits(data, val_size=DEFAULTS["val_size"], seed=seed)
    seed_everything(seed)  # the root script's initial weights for this seed
    net = init_network(*PRESETS[arch], tuple(splits.train_x.shape[1:]), splits.num_classes)
    set_normalization(net, splits.train_x)
    per_epoch = math.ceil(len(splits.train_y) / DEFAULTS["batch_size"])
    shadows = ShadowAverages(net, AVERAGES, epochs * per_epoch, per_epoch)
    started = time.perf_counter()
    net = train(net, splits.train_x, splits.train_y, splits.val_x, splits.val_y, learning_rate=DEFAULTS["lr"],
                training_epochs=epochs, loss_func=DEFAULTS["loss"], optimizer=DEFAULTS["optimizer"],
                batch_size=DEFAULTS["batch_size"], balance=DEFAULTS["balance"], seed=seed,
                average_decay=DEFAULTS["average_decay"], elastic=DEFAULTS["elastic"], erase=erase, shear=shear,
                keep=DEFAULTS["keep"], progress=False, log_epochs=True, on_step=shadows.update)
    seconds = time.perf_counter() - started
    if shadows.steps != shadows.total:
        raise RuntimeError(f"the averages saw {shadows.steps} steps, not the run's {shadows.total}")
    result = {"seed": seed, "train_seconds": seconds, "steps": shadows.steps, "returned": score(net, splits),
              "averages": {}}
    for name, module in shadows.modules.items():
        recalibrate_batch_norm(module, splits.train_x)
        result["averages"][name] = score(module, splits)
    return result


def _run(args: argparse.Namespace) -> int:
    import torch

    from .report import machine, write_json
    from .training import check_augmentation

    if not args.data.is_dir():
        raise UserError(f"--data {args.data} is not a folder: build one with "
                        f"python -m mobilenet_lab.prepare --out {args.data} --idx ../shared/data/mnist")
    if args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} must be at least 1")
    check_augmentation(flags=True, erase=args.erase, shear=args.shear)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads} must be at least 1")
        torch.set_num_threads(args.threads)
    try:  # fail now, not after the first run
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder of --out {args.out}: {exc.strerror}") from None
    report = {"command": "python -m mobilenet_lab.seeds " + " ".join(args.argv), "machine": machine(),
              "arch": args.arch, "epochs": args.epochs, "erase": args.erase, "shear": args.shear, "recipe": DEFAULTS,
              "runs": []}
    for seed in args.seeds:
        print(f"seed {seed}: training {args.arch} for {args.epochs} epochs with the recipe"
              f"{f', random erasing {args.erase:g}' if args.erase != DEFAULTS['erase'] else ''}"
              f"{f', shear {args.shear:g}' if args.shear != DEFAULTS['shear'] else ''}", flush=True)
        run = run_seed(args.data, seed, args.arch, args.epochs, args.erase, args.shear)
        report["runs"].append(run)
        print(f"seed {seed}: returned {run['returned']['test_accuracy']:.4f} test accuracy, "
              f"{run['returned']['test_f1_macro']:.4f} macro F1 ({run['train_seconds']:.0f} s of training)", flush=True)
        write_json(args.out, report)  # after every seed, so a long study keeps what it has
    print(summary(report["runs"]))
    print(f"written to {args.out}")
    return 0


def summary(runs: list[dict]) -> str:
    """Test accuracy of every average in every run, and the mean over the runs."""
    seeds = "".join(f"  seed {run['seed']:<3}" for run in runs)
    lines = [f"{'weights':<18}{seeds}  mean"]
    for name in ["returned", *runs[0]["averages"]]:
        figures = [run["returned"] if name == "returned" else run["averages"][name] for run in runs]
        accuracies = [f["test_accuracy"] for f in figures]
        lines.append(f"{name:<18}" + "".join(f"  {a:<8.4f}" for a in accuracies) + f"  {statistics.mean(accuracies):.4f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from .model import PRESETS

    p = argparse.ArgumentParser(prog="python -m mobilenet_lab.seeds",
                                description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--data", metavar="DIR", type=Path, required=True,
                   help="dataset folder from python -m mobilenet_lab.prepare (required)")
    p.add_argument("--seeds", metavar="N", type=int, nargs="+", default=[0],
                   help="seeds to train, one run each, one after the other (default: 0)")
    p.add_argument("--arch", metavar="NAME", choices=sorted(PRESETS), default="mobilenet",
                   help=f"preset: {', '.join(sorted(PRESETS))} (default: mobilenet)")
    p.add_argument("--epochs", metavar="N", type=int, default=DEFAULTS["epochs"],
                   help=f"epochs per run (default: the recipe's {DEFAULTS['epochs']})")
    p.add_argument("--erase", metavar="SHARE", type=float, default=DEFAULTS["erase"],
                   help="random erasing (training.random_erase) in this share of the training images, as the "
                        "root script's --erase (default: the recipe's, %(default)s)")
    p.add_argument("--shear", metavar="DEG", type=float, default=DEFAULTS["shear"],
                   help="largest random slant of the training images in degrees, as the root script's "
                        "--shear (default: the recipe's, %(default)s)")
    p.add_argument("--threads", metavar="N", type=int, default=None,
                   help="torch threads (default: torch's choice, all cores)")
    p.add_argument("--out", metavar="FILE", type=Path, default=Path("runs/seeds.json"),
                   help="JSON file for the figures (default: runs/seeds.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m mobilenet_lab.seeds``: exit status 0, or 2 with a one-line error."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(_run, args)


if __name__ == "__main__":
    raise SystemExit(main())
