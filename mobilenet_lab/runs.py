"""What a run of the root script prints and writes: its settings, the data, the results, metrics.json and the trained
model."""
import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .checkpoint import SavedModel, TrainingSaver, open_checkpoint, read_resume_state, save, versions
from .config import Config, from_flags
from .data import Splits
from .errors import UserError
from .files import write_json
from .metrics import compute_metrics, format_metrics
from .limits import check_memory
from .model import autocast_dtype, count_parameters, pick_device, planned_bytes
from .sample import sample_dataset
from .training import History, Predictions, evaluate

ARCHITECTURE = ("arch", "conv_blocks", "mobilenet_blocks", "input_dim", "num_classes")  # a saved model decides these


@dataclass
class RunPlan:
    """One run of the root script: who, which settings, where the data and the model are, what to write."""
    name: str
    roll_number: str
    config: Config
    training: bool
    data: Path
    model_path: Path
    model_given: bool
    out: Path
    visualize: bool
    show: bool
    device: torch.device
    saved: SavedModel | None = None  # the model to evaluate, or the interrupted run to resume

    def header(self) -> str:
        groups = ("data", "model", "training") if self.training else ("data", "model")
        dtype = autocast_dtype(self.config.precision, self.config.block_counts[1] == 0, self.device)
        where = {"data": self.data, "device": self.device, "model": self.model_path, "out": self.out}
        if self.training:
            where["training in"] = "bfloat16 autocast" if dtype is not None else "float32"
        lines = self.config.table(groups).splitlines() + [f"  {k:<16}  {v}" for k, v in where.items()]
        return (f"Name: {self.name}\nRoll number: {self.roll_number}\n\n"
                f"Parameters in effect{'' if self.training else ' (the saved model decides the architecture)'}:\n"
                + "\n".join(lines) + "\n\nLibraries: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + "\n")


def plan_run(args: argparse.Namespace, root: Path) -> RunPlan:
    """The RunPlan the root script's arguments ask for: a new training run, a resumed one, or evaluating a
    saved model, whose architecture then wins over the flags (a flag that contradicts it is refused).
    ``root`` is the root script's folder, which holds saved_models/."""
    out = Path(args.out) if args.out else None
    if args.resume:
        saved = read_resume_state(args.resume)
        if saved.trainer_state["epoch"] >= saved.config.epochs:
            raise UserError(f"{args.resume} is from a run that already finished all {saved.config.epochs} epochs: "
                            f"its model is in {Path(args.resume).parent}")
        run = saved.run
        return RunPlan(args.name, args.roll_number, saved.config, True, Path(run["data"]), Path(run["model"]),
                       bool(run["model_given"]), Path(args.resume).parent, args.visualize or bool(run["visualize"]),
                       args.show, pick_device(saved.config.device), saved)
    config, given = from_flags(args)
    device = pick_device(config.device)
    if args.data is not None and not Path(args.data).is_dir():
        exists = Path(args.data).exists()
        raise UserError(f"dataset path {args.data} {'is a file, not a folder' if exists else 'does not exist'}: "
                        + ("give the folder that holds the train and test parts" if exists else
                           f"build it with 'python -m mobilenet_lab prepare --out {args.data} --idx "
                           f"../shared/data/mnist', or leave out --data to use the embedded sample"))
    data = Path(args.data) if args.data is not None else sample_dataset()
    model_path = Path(args.model) if args.model else root / "saved_models" / f"{config.preset}.pt"
    check_memory(planned_bytes(config, args.train), f"{'training' if args.train else 'evaluating'} a "
                 f"{config.block_counts[0]} conv + {config.block_counts[1]} ConvDw network on "
                 f"{'x'.join(map(str, config.input_dim))} images in batches of {config.batch_size}",
                 "choose a smaller --batch-size or --input-dim, or fewer blocks")
    saved = None
    if not args.train:
        saved = open_checkpoint(model_path, device)
        config = _adopt(saved, config, given, model_path)
    out = out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.preset}"
    return RunPlan(args.name, args.roll_number, config, args.train, data, model_path, args.model is not None,
                   out, args.visualize, args.show, device, saved)


def _adopt(saved: SavedModel, config: Config, given: set[str], path: Path) -> Config:
    """The saved model's settings with the flags' data settings; a flag that contradicts its architecture is refused."""
    net = saved.net.config
    theirs = Config(conv_blocks=net.conv_block_count, mobilenet_blocks=net.mobilenet_block_count,
                    input_dim=tuple(net.input_dim), num_classes=net.num_classes)
    for key in sorted(given & set(ARCHITECTURE)):
        if key == "arch":
            mine, found = config.preset, theirs.preset
        elif key.endswith("blocks"):
            index = key == "mobilenet_blocks"
            mine, found = config.block_counts[index], theirs.block_counts[index]
        else:
            mine, found = getattr(config, key), getattr(theirs, key)
        if mine != found:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"the saved model {path} has {key.replace('_', ' ')} {found}, not {flag} {mine}: "
                            f"drop {flag}, pass the matching --model, or --train")
    keep = {k: getattr(config, k) for k in ("train_size", "val_size", "test_size", "seed", "device")}
    return replace(saved.config or Config(), conv_blocks=net.conv_block_count,
                   mobilenet_blocks=net.mobilenet_block_count, input_dim=tuple(net.input_dim),
                   num_classes=net.num_classes, **keep)


def make_run_dir(path: Path) -> Path:
    """Create the run folder, or fail with a clear message before any work is done."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{id(path)}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to the output folder {path} ({exc.strerror}): choose a writable one "
                        f"with --out DIR") from exc
    return path


def describe_splits(splits: Splits) -> str:
    lines = ["Data:"]
    for name, part in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        if len(part):
            lines.append(f"  {name:<5} {len(part):>6} images   class counts {part.class_counts(splits.num_classes)}")
    return "\n".join(lines + [f"  {name} part: {source}" for name, source in splits.sources.items()]) + "\n"


def saver_for(plan: RunPlan, splits: Splits, run_dir: Path) -> TrainingSaver:
    return TrainingSaver(run_dir, splits.class_names, splits.train.class_counts(splits.num_classes),
                         {"data": str(plan.data), "model": str(plan.model_path), "model_given": plan.model_given,
                          "visualize": plan.visualize})


def interrupted(saver: TrainingSaver) -> str:
    """What to tell the user after Ctrl-C during training."""
    if saver.epoch == 0:
        return "stopped during the first epoch; nothing was saved and saved models are untouched"
    return (f"stopped after epoch {saver.epoch} of {saver.epochs}. Best model so far: {saver.best_path}. "
            f"Continue with: python {Path(sys.argv[0]).name} --resume {saver.last_path}")


@dataclass
class RunResult:
    text: str
    metrics: dict
    record: dict


def _line(name: str, loss: float | None, accuracy: float | None, note: str = "") -> str:
    if loss is None:
        return f"  {name:<11} loss    n/a   accuracy    n/a  {note}"
    return f"  {name:<11} loss {loss:.4f}   accuracy {accuracy:.4f}  {note}".rstrip()


def finish_run(plan: RunPlan, net, history: History | None, splits: Splits, pred: Predictions,
               run_dir: Path, seconds: float) -> RunResult:
    """The test metrics, the training and validation figures, metrics.json."""
    metrics = compute_metrics(splits.test.labels, pred.labels, pred.probs, splits.class_names)
    if plan.training:
        train_eval = evaluate(net, splits.train.images, splits.train.labels)
        h = history
        figures = {"train": (train_eval.loss, train_eval.accuracy, "(the kept weights, no augmentation)"),
                   "validation": (h.kept_val_loss, h.kept_val_acc,
                                  f"(epoch {h.kept_epoch} of {len(h.epoch)}, whose weights are kept, batch-norm "
                                  f"statistics re-measured; best {h.val_acc[h.best_epoch - 1]:.4f} at epoch "
                                  f"{h.best_epoch})")}
    else:
        saved = plan.saved.metrics
        figures = {"train": (saved.get("train_loss"), saved.get("train_accuracy"), "(recorded at training time)"),
                   "validation": (saved.get("validation_loss"), saved.get("validation_accuracy"),
                                  "(recorded at training time)")}
    figures["test"] = (pred.loss, pred.accuracy, f"({len(splits.test)} images)")
    params = count_parameters(net)
    record = {"name": plan.name, "roll_number": plan.roll_number, "config": plan.config.as_dict(),
              "data": str(plan.data), "model": str(plan.model_path), "device": str(plan.device), "parameters": params}
    for split, (loss, acc, _) in figures.items():
        record[f"{split}_loss"], record[f"{split}_accuracy"] = loss, acc
    record.update(test_f1_macro=metrics["f1_macro"], test_f1_weighted=metrics["f1_weighted"],
                  confusion_matrix=metrics["confusion_matrix"], test_metrics=metrics,
                  history=history.as_dict() if history is not None else plan.saved.history,
                  seconds={"total": seconds}, torch_threads=torch.get_num_threads())
    write_json(run_dir / "metrics.json", record)
    text = "\n".join([f"parameters: {params:,}", "", "loss and accuracy",
                      *(_line(split, *figure) for split, figure in figures.items()), "", "test set metrics",
                      format_metrics(metrics)])
    return RunResult(text, metrics, record)


def save_trained(plan: RunPlan, net, history: History, splits: Splits, result: RunResult, run_dir: Path) -> list[Path]:
    """The trained model into the run folder, and to --model when it was given."""
    metrics = {k: v for k, v in result.record.items() if k not in ("history", "config")}
    counts = splits.train.class_counts(splits.num_classes)
    run = {"data": str(plan.data)}
    paths = [run_dir / "model.pt"] + ([plan.model_path] if plan.model_given else [])
    return [save(net, path, splits.class_names, plan.config, history.as_dict(), metrics, counts, run) for path in paths]
