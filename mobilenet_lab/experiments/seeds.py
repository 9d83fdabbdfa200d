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
and ``--shear`` the largest random slant in degrees, as the root script's flags do. The study
can change more of the recipe than the root script can (``Changes``: weight decay, the ranges
of rotation, shift and scale, dropout before fc, mixup, the last epochs without augmentation,
the seed of the validation split); those it applies by wrapping the library's functions in
this process only, for the run (``recipe_changed``). Otherwise every setting is the recipe's.
With ``--idx`` the returned weights are also scored on the full-MNIST training digits the
dataset left out ("dev": never trained on, not the test set).

Test figures here are for analysis only: they pick no seed and no setting of the saved
models. Two processes with ``--threads 1`` use a 2-core machine best (one seed each).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import statistics
import sys
import time
from collections.abc import Callable, Iterator
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


@dataclasses.dataclass(frozen=True)
class Changes:
    """Settings of the recipe a study may change; None (or 0) keeps the recipe's.

    Attributes:
        lr: peak of the one-cycle schedule (the root script's --lr).
        weight_decay: the optimizer's (training.WEIGHT_DECAY otherwise).
        erase, shear: as the root script's --erase and --shear.
        degrees, translate, scale: the largest random rotation (degrees), shift (share of the
            side) and scale change (share) of training.random_distort.
        dropout: dropout with this probability on the pooled features before fc, in training only.
        mixup: alpha of mixup: each batch is blended with a shuffled copy of itself by a
            Beta(alpha, alpha) share, and so are the two losses.
        clean_last: the last this many epochs train without augmentation.
        split_seed: the seed of the validation split (otherwise the run's seed).
    """
    lr: float | None = None
    weight_decay: float | None = None
    erase: float = DEFAULTS["erase"]
    shear: float = DEFAULTS["shear"]
    degrees: float | None = None
    translate: float | None = None
    scale: float | None = None
    dropout: float = 0.0
    mixup: float = 0.0
    clean_last: int = 0
    split_seed: int | None = None

    def named(self) -> dict:
        """The settings that differ from the recipe's, by name."""
        recipe = Changes()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(recipe, f.name)}


@contextlib.contextmanager
def recipe_changed(changes: Changes, net, seed: int, epochs: int, steps_per_epoch: int) -> Iterator[None]:
    """Within the block, train() trains ``net`` with ``changes`` the root script has no flag for.

    train() looks its helpers up in mobilenet_lab.training at every call, so wrapping them
    there changes the run; the originals are back when the block ends. Dropout is a hook on
    ``net.fc``, which copies of the network (the weight average's) carry too.
    """
    from . import training

    names = ("make_optimizer", "random_distort", "make_batch", "train_step")
    originals = {name: getattr(training, name) for name in names}
    hook = None
    try:
        if changes.weight_decay is not None:
            training.make_optimizer = lambda name, params, lr, weight_decay=None: originals["make_optimizer"](
                name, params, lr, changes.weight_decay)
        ranges = {k: v for k, v in (("degrees", changes.degrees), ("translate", changes.translate)) if v is not None}
        if changes.scale is not None:
            ranges["scale"] = (1 - changes.scale, 1 + changes.scale)
        if ranges:
            training.random_distort = functools.partial(originals["random_distort"], **ranges)
        if changes.clean_last:
            batches, augmented = [0], (epochs - changes.clean_last) * steps_per_epoch

            def make_batch(x, idx, generator, augment, device, **settings):
                batches[0] += 1
                return originals["make_batch"](x, idx, generator, augment and batches[0] <= augmented, device,
                                               **settings)
            training.make_batch = make_batch
        if changes.mixup:
            import torch

            shuffler = torch.Generator().manual_seed(1000 + seed)
            share = torch.distributions.Beta(changes.mixup, changes.mixup)

            def mixup_step(net, opt, loss_fn, xb, yb):
                lam = float(share.sample())  # from torch's global generator, seeded by train()
                order = torch.randperm(len(yb), generator=shuffler)
                logits = net(lam * xb + (1 - lam) * xb[order])
                loss = lam * loss_fn(logits, yb) + (1 - lam) * loss_fn(logits, yb[order])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss, logits
            training.train_step = mixup_step
        if changes.dropout:
            import torch.nn.functional as F

            hook = net.fc.register_forward_pre_hook(
                lambda fc, inputs: (F.dropout(inputs[0], changes.dropout, fc.training),))
        yield
    finally:
        for name, original in originals.items():
            setattr(training, name, original)
        if hook is not None:
            hook.remove()


def left_out_digits(idx_folder: Path, splits):
    """The full-MNIST training digits (IDX files in ``idx_folder``) that are in neither the
    training nor the validation part of ``splits``, as (images, labels) tensors."""
    import numpy as np
    import torch

    from .prepare import load_idx_mnist, row_hashes

    images, labels, _, _ = load_idx_mnist(idx_folder)
    used = set(row_hashes(torch.cat([splits.train_x, splits.val_x]).numpy().reshape(-1, *images.shape[1:])))
    keep = np.array([digest not in used for digest in row_hashes(images)], dtype=bool)
    return torch.from_numpy(images[keep]).unsqueeze(1), torch.from_numpy(labels[keep].astype(np.int64))


def run_seed(data: Path, seed: int, arch: str, epochs: int, changes: Changes = Changes(),
             averages: list[str] | None = None, idx: Path | None = None) -> dict:
    """One recipe run with ``seed`` (and ``changes``): its returned weights and the shadow
    ``averages`` (default: all of AVERAGES) scored."""
    import math

    from .data import load_splits
    from .model import PRESETS, init_network, seed_everything, set_normalization
    from .training import evaluate, recalibrate_batch_norm, train

    split_seed = seed if changes.split_seed is None else changes.split_seed
    splits = load_splits(data, val_size=DEFAULTS["val_size"], seed=split_seed)
    seed_everything(seed)  # the root script's initial weights for this seed
    net = init_network(*PRESETS[arch], tuple(splits.train_x.shape[1:]), splits.num_classes)
    set_normalization(net, splits.train_x)
    per_epoch = math.ceil(len(splits.train_y) / DEFAULTS["batch_size"])
    names = list(AVERAGES) if averages is None else averages
    with recipe_changed(changes, net, seed, epochs, per_epoch):
        shadows = ShadowAverages(net, {name: AVERAGES[name] for name in names}, epochs * per_epoch, per_epoch)
        started = time.perf_counter()
        net = train(net, splits.train_x, splits.train_y, splits.val_x, splits.val_y,
                    learning_rate=changes.lr or DEFAULTS["lr"], training_epochs=epochs, loss_func=DEFAULTS["loss"],
                    optimizer=DEFAULTS["optimizer"], batch_size=DEFAULTS["batch_size"], balance=DEFAULTS["balance"],
                    seed=seed, average_decay=DEFAULTS["average_decay"], elastic=DEFAULTS["elastic"],
                    erase=changes.erase, shear=changes.shear, keep=DEFAULTS["keep"], progress=False,
                    log_epochs=True, on_step=shadows.update)
        seconds = time.perf_counter() - started
    if shadows.steps != shadows.total:
        raise RuntimeError(f"the averages saw {shadows.steps} steps, not the run's {shadows.total}")
    result = {"seed": seed, "split_seed": split_seed, "changes": changes.named(), "train_seconds": seconds,
              "steps": shadows.steps, "returned": score(net, splits), "averages": {}}
    if idx is not None:
        dev_x, dev_y = left_out_digits(idx, splits)
        result["returned"].update(dev_accuracy=evaluate(net, dev_x, dev_y).accuracy, dev_digits=len(dev_y))
    for name, module in shadows.modules.items():
        recalibrate_batch_norm(module, splits.train_x)
        result["averages"][name] = score(module, splits)
    return result


# The study's settings that are not augmentation ranges (training.AUGMENTATION_LIMITS has
# those): (low, high, example).
CHANGE_LIMITS = {"weight_decay": (0.0, 1.0, "0.05"), "dropout": (0.0, 0.9, "0.2"), "mixup": (0.0, 10.0, "0.2")}


def check_changes(args: argparse.Namespace) -> Changes:
    """The flags' changes to the recipe, or a UserError naming the flag that is out of range."""
    import math

    from .training import check_augmentation

    ranges = {name: getattr(args, name) for name in ("degrees", "translate", "scale")
              if getattr(args, name) is not None}
    check_augmentation(flags=True, erase=args.erase, shear=args.shear, **ranges)
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr {args.lr:g} must be a positive number, e.g. 0.005")
    for name, (low, high, example) in CHANGE_LIMITS.items():
        value = getattr(args, name)
        if value is not None and not low <= value <= high:
            raise UserError(f"--{name.replace('_', '-')} {value:g} must be between {low:g} and {high:g}, "
                            f"e.g. {example}")
    if not 0 <= args.clean_last <= args.epochs:
        raise UserError(f"--clean-last {args.clean_last} must be between 0 and --epochs ({args.epochs})")
    return Changes(lr=args.lr, weight_decay=args.weight_decay, erase=args.erase, shear=args.shear,
                   degrees=args.degrees, translate=args.translate, scale=args.scale, dropout=args.dropout or 0.0,
                   mixup=args.mixup or 0.0, clean_last=args.clean_last, split_seed=args.split_seed)


def _run(args: argparse.Namespace) -> int:
    import torch

    from .prepare import IDX_FILES, find_idx
    from .report import machine, write_json

    if not args.data.is_dir():
        raise UserError(f"--data {args.data} is not a folder: build one with "
                        f"python -m mobilenet_lab.prepare --out {args.data} --idx ../shared/data/mnist")
    if args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} must be at least 1")
    changes = check_changes(args)
    if args.idx is not None:
        if not args.idx.is_dir():
            raise UserError(f"--idx {args.idx} is not a folder: give the folder of the MNIST IDX files, "
                            f"e.g. ../shared/data/mnist")
        for key in ("train_images", "train_labels"):
            find_idx(args.idx, IDX_FILES[key])
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads} must be at least 1")
        torch.set_num_threads(args.threads)
    try:  # fail now, not after the first run
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder of --out {args.out}: {exc.strerror}") from None
    named = changes.named()
    report = {"command": "python -m mobilenet_lab.seeds " + " ".join(args.argv), "machine": machine(),
              "arch": args.arch, "epochs": args.epochs, "erase": args.erase, "shear": args.shear,
              "changes": named, "averages": args.averages, "recipe": DEFAULTS, "runs": []}
    described = "".join(f", {name.replace('_', ' ')} {value:g}" for name, value in named.items())
    for seed in args.seeds:
        print(f"seed {seed}: training {args.arch} for {args.epochs} epochs with the recipe{described}", flush=True)
        run = run_seed(args.data, seed, args.arch, args.epochs, changes, args.averages, args.idx)
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
    p.add_argument("--averages", metavar="NAME", nargs="*", choices=list(AVERAGES), default=list(AVERAGES),
                   help="weight averages to follow alongside each run; none at all when the flag has no names, "
                        "which saves their cost (default: all: " + ", ".join(AVERAGES) + ")")
    changed = p.add_argument_group("changes to the recipe (default: the recipe's)")
    changed.add_argument("--lr", metavar="LR", type=float, default=None,
                         help=f"peak of the one-cycle schedule (default: the recipe's {DEFAULTS['lr']:g})")
    changed.add_argument("--weight-decay", metavar="WD", type=float, default=None,
                         help="the optimizer's weight decay (default: training.WEIGHT_DECAY, 5e-4)")
    changed.add_argument("--degrees", metavar="DEG", type=float, default=None,
                         help="largest random rotation in degrees (default: random_distort's, 10)")
    changed.add_argument("--translate", metavar="SHARE", type=float, default=None,
                         help="largest random shift as a share of the image side (default: random_distort's, 0.1)")
    changed.add_argument("--scale", metavar="SHARE", type=float, default=None,
                         help="largest random scale change, as a share (default: random_distort's, 0.1)")
    changed.add_argument("--dropout", metavar="P", type=float, default=None,
                         help="dropout on the pooled features before fc, in training only (default: none)")
    changed.add_argument("--mixup", metavar="ALPHA", type=float, default=None,
                         help="mixup: blend each batch with a shuffled copy of itself by a Beta(ALPHA, ALPHA) "
                              "share, and the two losses likewise (default: none)")
    changed.add_argument("--clean-last", metavar="N", type=int, default=0,
                         help="train the last N epochs without augmentation (default: %(default)s)")
    changed.add_argument("--split-seed", metavar="N", type=int, default=None,
                         help="seed of the validation split (default: each run's seed, as the root script)")
    p.add_argument("--idx", metavar="DIR", type=Path, default=None,
                   help="folder of the MNIST IDX files the dataset was built from: also score the returned "
                        "weights on the training digits the dataset left out (default: off)")
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
