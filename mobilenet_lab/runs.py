"""What a run of the root script prints and writes: its header, the data, the results, metrics.json, its folder."""
from dataclasses import replace
from pathlib import Path

import torch

from .checkpoint import versions
from .config import Config
from .data import Splits
from .errors import UserError, note
from .evaluation import Evaluation
from .files import hold_folder
from .metrics import compute_metrics, format_metrics
from .model import count_parameters

ARCHITECTURE = ("conv_block_count", "mobilenet_block_count", "input_dim", "num_classes")  # a saved model decides these
KEPT_FROM_FLAGS = ("train_size", "val_size", "test_size", "seed", "device")  # evaluating: the flags decide these


def adopt_saved(checkpoint: dict, config: Config, given: set[str], arch: str | None, path: Path) -> Config:
    """The settings for evaluating a saved model: its architecture and recipe, with the flags' data settings; a flag
    that contradicts its architecture is refused."""
    theirs = Config(**{k: tuple(v) if k == "input_dim" else v for k, v in checkpoint["architecture"].items()})
    flags = [("arch", arch, theirs.arch)] if arch is not None else []
    flags += [(key, getattr(config, key), getattr(theirs, key)) for key in sorted(given & set(ARCHITECTURE))]
    for key, mine, found in flags:
        if mine != found:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"the saved model {path} has {key.replace('_', ' ')} {found}, not {flag} {mine}: drop "
                            f"{flag}, pass the matching --model, or --train")
    recipe = Config.from_dict(checkpoint["config"]) if checkpoint["config"] else Config()
    return replace(recipe, **{k: getattr(theirs, k) for k in ARCHITECTURE},
                   **{k: getattr(config, k) for k in KEPT_FROM_FLAGS})


def header(name: str, roll_number: str, config: Config, training: bool, where: dict) -> str:
    """Name, roll number, every parameter in effect, where things are, and the library versions."""
    groups = ("data", "model", "training") if training else ("data", "model")
    lines = config.table(groups).splitlines() + [f"  {k:<16}  {v}" for k, v in where.items()]
    return (f"Name: {name}\nRoll number: {roll_number}\n\n"
            f"Parameters in effect{'' if training else ' (the saved model decides the architecture)'}:\n"
            + "\n".join(lines) + "\n\nLibraries: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + "\n")


def open_run_folder(folder: Path, training: bool):
    """Hold the run folder and return its lock (files.hold_folder). Training stops here when it cannot be written; an
    evaluation goes on writing nothing (None), after a note."""
    try:
        return hold_folder(folder)
    except OSError as exc:
        if training:
            raise UserError(f"cannot write to the output folder {folder} ({exc.strerror}): choose a writable one with "
                            f"--out DIR") from None
        note(f"cannot write to the output folder {folder} ({exc.strerror}): every result is printed but none is saved; "
             f"choose a writable folder with --out DIR to keep them")
        return None


def describe_splits(splits: Splits) -> str:
    parts = (("train", splits.train), ("val", splits.val), ("test", splits.test))
    return "Data:\n" + "".join(f"  {name:<5} {len(part):>6} images   class counts "
                               f"{part.class_counts(splits.num_classes)}\n" for name, part in parts if len(part))


def _line(name: str, loss: float | None, accuracy: float | None, note_: str = "") -> str:
    figures = f"loss {loss:.4f}   accuracy {accuracy:.4f}" if loss is not None else "loss    n/a   accuracy    n/a"
    return f"  {name:<11} {figures}  {note_}"


def training_figures(train_eval: Evaluation, history: dict) -> dict:
    """What a training run records of its final weights (stored in the checkpoint, printed when it is evaluated)."""
    return {"train_loss": train_eval.loss, "train_accuracy": train_eval.accuracy,
            "validation_loss": history["final_val_loss"], "validation_accuracy": history["final_val_acc"]}


def report_results(net, splits: Splits, pred, scores: dict, recorded: dict, history: dict, training: bool,
                   record: dict) -> tuple[str, dict]:
    """The printed results (parameters; training, validation and test loss and accuracy; the test metrics) and the
    record metrics.json holds."""
    metrics = compute_metrics(splits.test.labels, pred, scores["probs"], splits.class_names)
    when = "(the final weights, no augmentation)" if training else "(recorded at training time)"
    best = history.get("best_epoch")
    val_note = (f"(the final weights, batch-norm statistics re-measured; best epoch {best}: "
                f"{history['val_acc'][best - 1]:.4f})" if training and best else when)
    figures = {"train": (recorded.get("train_loss"), recorded.get("train_accuracy"), when),
               "validation": (recorded.get("validation_loss"), recorded.get("validation_accuracy"), val_note),
               "test": (scores["loss"], scores["accuracy"], f"({len(splits.test)} images)")}
    record = dict(record, parameters=count_parameters(net), torch_threads=torch.get_num_threads(),
                  test_f1_macro=metrics["f1_macro"], test_f1_weighted=metrics["f1_weighted"],
                  confusion_matrix=metrics["confusion_matrix"], test_metrics=metrics, history=history)
    for split, (loss, accuracy, _) in figures.items():
        record[f"{split}_loss"], record[f"{split}_accuracy"] = loss, accuracy
    text = "\n".join([f"parameters: {record['parameters']:,}", "", "loss and accuracy",
                      *(_line(split, *figure) for split, figure in figures.items()), "", "test set metrics",
                      format_metrics(metrics)])
    return text, record
