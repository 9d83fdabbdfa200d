"""What a run of the root script prints and writes: settings, run folder, results, metrics.json."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import UserError
from .metrics import format_metrics


@dataclass
class RunSettings:
    """Every parameter in effect for one run of the root script (printed, and stored in the checkpoint)."""
    name: str
    roll_number: str
    data: str
    is_training: bool
    preset: str
    conv_block_count: int
    mobilenet_block_count: int
    input_dim: tuple[int, int, int]
    num_classes: int
    train_size: str | None
    val_size: str | None
    test_size: str | None
    epochs: int
    learning_rate: float
    batch_size: int
    optimizer: str
    loss: str
    balance: str
    augment: bool
    seed: int
    device: str
    model_path: str
    out: str
    visualize: bool
    explicit: set[str] = field(default_factory=set)
    resume: str | None = None
    start_state: dict | None = field(default=None, repr=False)  # the training state --resume continues
    average_decay: float = 0.0  # 0: no weight averaging (and what checkpoints from before it mean)
    elastic: float = 0.0  # pixels of elastic distortion; 0: affine augmentation only (checkpoints from before it)
    erase: float = 0.0  # share of training images with a random box blanked; 0: none (checkpoints from before it)
    shear: float = 0.0  # degrees of random slant; 0: none (checkpoints from before it)
    keep: str = "best"  # whose weights train() returns: last or best epoch ("best" for checkpoints from before it)

    def as_dict(self) -> dict:
        """The settings as plain values (stored in checkpoints and metrics.json)."""
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()
             if k not in ("explicit", "start_state")}
        d["explicit"] = sorted(self.explicit)
        return d

    def table(self) -> str:
        shown = {k: v for k, v in vars(self).items()
                 if k not in ("name", "roll_number", "explicit", "start_state") and not (k == "resume" and v is None)}
        if not self.is_training:  # these only matter when training
            for k in ("train_size", "epochs", "learning_rate", "batch_size", "optimizer", "loss", "balance", "augment",
                      "average_decay", "elastic", "erase", "shear", "keep"):
                shown.pop(k)
        width = max(len(k) for k in shown)
        return "\n".join(f"  {k:<{width}}  {'all' if v is None else v}" for k, v in shown.items())


def default_run_dir(preset: str) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{preset}"


def make_run_dir(path: str | Path) -> Path:
    """Create the run folder (or fail with a clear message before any work is done)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to the output folder {path} ({exc.strerror}): "
                        f"choose a writable one with --out DIR") from exc
    return path


def summarise_split(name: str, loss: float | None, accuracy: float | None, note: str = "") -> str:
    if loss is None:
        return f"  {name:<11} loss    n/a   accuracy    n/a  {note}"
    return f"  {name:<11} loss {loss:.4f}   accuracy {accuracy:.4f}  {note}".rstrip()


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def results_block(split_figures: dict[str, tuple], metrics: dict, params: int) -> str:
    lines = [f"parameters: {params:,}", "", "loss and accuracy"]
    for split, (loss, acc, note) in split_figures.items():
        lines.append(summarise_split(split, loss, acc, note))
    lines += ["", "test set metrics", format_metrics(metrics)]
    return "\n".join(lines)


def metrics_record(settings: RunSettings, split_figures: dict[str, tuple], metrics: dict, params: int,
                   history: dict, seconds: dict[str, float]) -> dict:
    """The content of metrics.json: the keys the assignment's figures need, plus everything else."""
    record = {
        "name": settings.name, "roll_number": settings.roll_number,
        "settings": settings.as_dict(),
        "parameters": params,
    }
    for split, (loss, acc, note) in split_figures.items():
        record[f"{split}_loss"], record[f"{split}_accuracy"] = loss, acc
    record.update({
        "test_f1_macro": metrics["f1_macro"], "test_f1_weighted": metrics["f1_weighted"],
        "confusion_matrix": metrics["confusion_matrix"], "test_metrics": metrics,
        "history": history, "seconds": seconds, "torch_threads": torch.get_num_threads(),
    })
    return record


# ---------------------------------------------------------------------------------------------
# From command-line arguments to settings, and from predictions to results.
# ---------------------------------------------------------------------------------------------
def parse_input_dim(text: str) -> tuple[int, int, int]:
    parts = [p for p in str(text).replace("x", ",").replace(" ", ",").split(",") if p]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise UserError(f"--input-dim {text} is not three positive integers C,H,W: use e.g. 1,28,28")
    return dims  # type: ignore[return-value]


def resolve_settings(args, root: Path) -> RunSettings:
    """Turn the root script's arguments into the settings in effect (presets, defaults, paths)."""
    from .data import sample_dataset
    from .model import PRESETS, check_config, default_device
    from .training import check_augmentation

    if getattr(args, "resume", None):
        return resume_settings(args)
    explicit = {k for k in ("conv_blocks", "mobilenet_blocks", "input_dim", "num_classes", "model")
                if getattr(args, k) is not None}
    conv, mobile = PRESETS[args.arch]
    conv = args.conv_blocks if args.conv_blocks is not None else conv
    mobile = args.mobilenet_blocks if args.mobilenet_blocks is not None else mobile
    preset = next((name for name, counts in PRESETS.items() if counts == (conv, mobile)), "custom")
    input_dim = parse_input_dim(args.input_dim) if args.input_dim is not None else (1, 28, 28)
    num_classes = args.num_classes if args.num_classes is not None else 10
    check_config(conv, mobile, input_dim, num_classes)
    if args.device == "auto":
        device = str(default_device())
    else:
        available = {"cpu": True, "cuda": torch.cuda.is_available(),
                     "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
        if not available[args.device]:
            raise UserError(f"--device {args.device} is not available on this machine: use --device auto or cpu")
        device = args.device
    if args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} must be at least 1")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be at least 1")
    if not args.lr > 0:
        raise UserError(f"--lr {args.lr} must be a positive number, e.g. 0.003")
    if not 0 <= args.average_decay < 1:
        raise UserError(f"--average-decay {args.average_decay} must be at least 0 and below 1, e.g. 0.999 "
                        f"(0 turns weight averaging off)")
    check_augmentation(flags=True, elastic=args.elastic, shear=args.shear, erase=args.erase)
    if args.data is not None and not Path(args.data).exists():
        raise UserError(f"dataset path {args.data} does not exist: build it with "
                        f"'python -m mobilenet_lab.prepare --out {args.data} --idx ../shared/data/mnist', "
                        f"or leave out --data to use the embedded sample")
    if args.data is not None and not Path(args.data).is_dir():
        raise UserError(f"dataset path {args.data} is a file, not a folder: give the folder that holds "
                        f"the train and test parts (folders or .zip files)")
    data = str(args.data) if args.data is not None else str(sample_dataset())
    model_path = args.model or str(root / "saved_models" / f"{preset}.pt")
    return RunSettings(
        name=args.name, roll_number=args.roll_number, data=data, is_training=args.train, preset=preset,
        conv_block_count=conv, mobilenet_block_count=mobile, input_dim=input_dim, num_classes=num_classes,
        train_size=args.train_size, val_size=args.val_size, test_size=args.test_size, epochs=args.epochs,
        learning_rate=args.lr, batch_size=args.batch_size, optimizer=args.optimizer, loss=args.loss,
        balance=args.balance, augment=not args.no_augment, seed=args.seed, average_decay=args.average_decay,
        elastic=args.elastic if not args.no_augment else 0.0, erase=args.erase if not args.no_augment else 0.0,
        shear=args.shear if not args.no_augment else 0.0, keep=args.keep,
        device=device,
        model_path=model_path, out=str(args.out or default_run_dir(preset)), visualize=args.visualize,
        explicit=explicit)


def resume_settings(args) -> RunSettings:
    """Settings of an interrupted run, read from its checkpoint-last.pt (--resume)."""
    from .checkpoint import read_resume_state

    stored, state = read_resume_state(args.resume)
    known = set(RunSettings.__dataclass_fields__) - {"start_state", "resume"}
    values = {k: v for k, v in stored.items() if k in known}
    values.update(input_dim=tuple(values["input_dim"]), explicit=set(values.get("explicit", [])),
                  name=args.name, roll_number=args.roll_number, out=str(Path(args.resume).parent),
                  resume=str(args.resume), visualize=args.visualize or values.get("visualize", False))
    if state["epoch"] >= state["epochs"]:
        raise UserError(f"{args.resume} is from a run that already finished all {state['epochs']} epochs: "
                        f"its model is in {Path(args.resume).parent}")
    settings = RunSettings(**values)
    settings.start_state = state
    return settings


def interrupted(saver) -> str:
    """What to tell the user after Ctrl-C during training."""
    if saver.epoch == 0:
        return "stopped during the first epoch; nothing was saved and saved models are untouched"
    return (f"stopped after epoch {saver.epoch} of {saver.epochs}. Best model so far: {saver.best_path}. "
            f"Continue with: python {Path(__import__('sys').argv[0]).name} --resume {saver.last_path}")


def adopt_checkpoint(settings: RunSettings, net) -> RunSettings:
    """Take the architecture from a loaded model; refuse explicit flags that contradict it."""
    config = net.config
    saved = {"conv_blocks": config.conv_block_count, "mobilenet_blocks": config.mobilenet_block_count,
             "input_dim": tuple(config.input_dim), "num_classes": config.num_classes}
    asked = {"conv_blocks": settings.conv_block_count, "mobilenet_blocks": settings.mobilenet_block_count,
             "input_dim": tuple(settings.input_dim), "num_classes": settings.num_classes}
    for key in saved:
        if key in settings.explicit and saved[key] != asked[key]:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"the saved model {settings.model_path} has {key.replace('_', ' ')} {saved[key]}, "
                            f"not {flag} {asked[key]}: drop {flag}, pass the matching --model, or --train")
    settings.conv_block_count, settings.mobilenet_block_count = saved["conv_blocks"], saved["mobilenet_blocks"]
    settings.input_dim, settings.num_classes = saved["input_dim"], saved["num_classes"]
    settings.preset = net.checkpoint.get("preset") or settings.preset
    return settings


def describe_splits(splits) -> str:
    lines = ["Data:"]
    for split in ("train", "val", "test"):
        n = len(getattr(splits, f"{split}_y"))
        if n:
            lines.append(f"  {split:<5} {n:>6} images   class counts {splits.class_counts(split)}")
    lines += [f"  {name} part: {source}" for name, source in splits.sources.items()]
    return "\n".join(lines) + "\n"


@dataclass
class RunResult:
    text: str
    metrics: dict
    record: dict


def finish_run(settings: RunSettings, net, splits, pred, run_dir: Path, seconds: float) -> RunResult:
    """Compute the test metrics, gather train/validation figures, write metrics.json."""
    from .metrics import compute_metrics
    from .model import count_parameters
    from .training import evaluate

    metrics = compute_metrics(splits.test_y, pred.labels, pred.probs, splits.class_names)
    history = getattr(net, "history", {}) or {}
    if settings.is_training:
        train_eval = evaluate(net, splits.train_x, splits.train_y)
        kept, best = history.get("kept_epoch", history["best_epoch"]), history["best_epoch"]
        recalibrated = history.get("recalibrated", False)  # then the kept weights were judged again
        val_loss, val_acc = ((history["kept_val_loss"], history["kept_val_acc"]) if recalibrated
                             else (history["val_loss"][kept - 1], history["val_acc"][kept - 1]))
        figures = {"train": (train_eval.loss, train_eval.accuracy, "(the kept weights, no augmentation)"),
                   "validation": (val_loss, val_acc,
                                  f"(epoch {kept} of {len(history['epoch'])}, whose weights are kept"
                                  f"{', batch-norm statistics re-measured' if recalibrated else ''}; best "
                                  f"{history['val_acc'][best - 1]:.4f} at epoch {best})")}
    else:
        saved = getattr(net, "checkpoint", {}).get("metrics", {})
        figures = {"train": (saved.get("train_loss"), saved.get("train_accuracy"), "(recorded at training time)"),
                   "validation": (saved.get("validation_loss"), saved.get("validation_accuracy"),
                                  "(recorded at training time)")}
    figures["test"] = (pred.loss, pred.accuracy, f"({len(splits.test_y)} images)")
    params = count_parameters(net)
    record = metrics_record(settings, figures, metrics, params, history, {"total": seconds})
    write_json(run_dir / "metrics.json", record)
    return RunResult(results_block(figures, metrics, params), metrics, record)


def save_trained(net, settings: RunSettings, splits, result: RunResult, run_dir: Path) -> list[Path]:
    """Save the trained model into the run folder, and to --model when it was given."""
    from .checkpoint import save

    metrics = {k: v for k, v in result.record.items() if k not in ("history", "settings", "test_metrics")}
    metrics["test_metrics"] = result.metrics
    train_args = settings.as_dict()
    train_args["class_counts"] = splits.class_counts("train")
    paths = [save(net, run_dir / "model.pt", splits.class_names, train_args, metrics, settings.preset)]
    if "model" in settings.explicit:
        paths.append(save(net, settings.model_path, splits.class_names, train_args, metrics, settings.preset))
    return paths
