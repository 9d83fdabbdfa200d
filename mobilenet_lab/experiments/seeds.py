"""The recipe over several seeds: how far one run's score falls from the recipe's mean, with any setting of the Config
changed (e.g. --weight-decay 0.05 or --precision bf16).

    python -m mobilenet_lab seeds --data ./mnist --idx ../shared/data/mnist --seeds 0 1 2 --threads 1

Each seed trains the recipe through train(), as the root script does with ``--seed N``: its own
validation split and initial weights. The returned weights are scored on the test digits and, with
``--idx``, on the MNIST training digits the dataset left out ("dev": never trained on, not the test
set). Choices are made on validation and dev figures only; test figures are reported, never used to
pick a setting or a seed."""
import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..config import Config, add_flags, from_flags
from ..data import Splits, load_splits
from ..errors import Parser, UserError, run_cli
from ..files import write_json
from ..metrics import compute_metrics
from ..model import init_network, seed_everything, set_normalization
from ..sample import IDX_FILES, find_idx, load_idx_mnist, row_hashes
from ..training import evaluate, train
from .measure import machine


def score(net, splits: Splits) -> dict:
    """Test accuracy, macro F1 and validation accuracy of ``net``."""
    test = evaluate(net, splits.test.images, splits.test.labels)
    return {"test_accuracy": test.accuracy,
            "test_f1_macro": compute_metrics(splits.test.labels, test.labels, class_names=splits.class_names)["f1_macro"],
            "val_accuracy": evaluate(net, splits.val.images, splits.val.labels).accuracy}


def left_out_digits(idx_folder: Path, splits: Splits) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST training digits (IDX files in ``idx_folder``) in neither the training nor the validation set."""
    images, labels, _, _ = load_idx_mnist(idx_folder)
    used = set(row_hashes(torch.cat([splits.train.images, splits.val.images]).numpy().reshape(-1, *images.shape[1:])))
    keep = np.array([digest not in used for digest in row_hashes(images)], dtype=bool)
    return torch.from_numpy(images[keep]).unsqueeze(1), torch.from_numpy(labels[keep].astype(np.int64))


def run_seed(data: Path, config: Config, idx: Path | None = None, split_seed: int | None = None) -> dict:
    """One recipe run with ``config.seed`` (the validation split of ``split_seed`` when given), scored."""
    splits = load_splits(data, replace(config, seed=config.seed if split_seed is None else split_seed))
    seed_everything(config.seed)  # the root script's initial weights for this seed
    net = init_network(*config.block_counts, config.input_dim, config.num_classes)
    set_normalization(net, splits.train.images)
    started = time.perf_counter()
    net, _ = train(net, splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, config=config)
    result = {"seed": config.seed, "split_seed": split_seed, "train_seconds": time.perf_counter() - started,
              "returned": score(net, splits)}
    if idx is not None:
        dev_x, dev_y = left_out_digits(idx, splits)
        result["returned"].update(dev_accuracy=evaluate(net, dev_x, dev_y).accuracy, dev_digits=len(dev_y))
    return result


def build_parser() -> Parser:
    p = Parser(prog="python -m mobilenet_lab seeds", description=__doc__.split("\n\n")[0])
    groups = {"study": p.add_argument_group("study")}
    s = groups["study"]
    s.add_argument("--data", metavar="DIR", type=Path, required=True, help="dataset folder from prepare (required)")
    s.add_argument("--seeds", metavar="N", type=int, nargs="+", default=[0], help="seeds to train, one run each (default: 0)")
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
              "config": config.as_dict(), "changed": changed, "runs": []}
    write_json(args.out, report)  # fails now, not after the first run, when --out cannot be written
    described = "".join(f", {name.replace('_', ' ')} {value}" for name, value in changed.items())
    for seed in args.seeds:
        print(f"seed {seed}: training {config.preset} for {config.epochs} epochs with the recipe{described}", flush=True)
        run = run_seed(args.data, replace(config, seed=seed), args.idx, args.split_seed)
        report["runs"].append(run)
        dev = (f", {run['returned']['dev_accuracy']:.4f} on the {run['returned']['dev_digits']:,} left-out digits"
               if args.idx is not None else "")
        print(f"seed {seed}: returned {run['returned']['test_accuracy']:.4f} test accuracy, "
              f"{run['returned']['test_f1_macro']:.4f} macro F1{dev} ({run['train_seconds']:.0f} s of training)",
              flush=True)
        write_json(args.out, report)  # after every seed, so a long study keeps what it has
    accuracies = [run["returned"]["test_accuracy"] for run in report["runs"]]
    print(f"test accuracy over {len(accuracies)} seeds: mean {statistics.mean(accuracies):.4f}, from "
          f"{min(accuracies):.4f} to {max(accuracies):.4f}\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
