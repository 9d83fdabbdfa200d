"""Train with a checkpoint after every epoch, and resume a run that was stopped.

    python -m mobilenet_lab train --data ./mnist [the root script's training flags] [--out DIR] [--model PATH]
    python -m mobilenet_lab train --resume runs/.../checkpoint-last.pt

The root script's training, plus: after every epoch the run folder gets checkpoint-last.pt (the whole training state)
and, when validation improves, checkpoint-best.pt (a model ``load`` reads). Ctrl-C keeps the last finished epoch, and
--resume continues it to the weights and figures an uninterrupted run reaches."""
import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

from ..checkpoint import read_checkpoint, save
from ..config import Config, add_flags, from_flags
from ..data import Splits, load_splits
from ..errors import Interrupted, Parser, UserError, run_cli
from ..evaluation import evaluate, test
from ..files import release_folder
from ..model import init_network
from ..files import write_json
from ..runs import describe_splits, header, open_run_folder, report_results, training_figures
from ..sample import sample_dataset
from ..student import identity
from ..training import EpochLog, History, Run, train

# Every field of a training state and its type; a file lacking one is refused before anything is built from it.
STATE_FIELDS = {"model": dict, "optimizer": dict, "scheduler": dict, "generator": torch.Tensor, "history": dict,
                "epoch": int, "step": int}


def training_state(run: Run) -> dict:
    """What --resume needs to continue ``run`` exactly: every weight, the optimiser, the schedule, the average, the
    random generator's state and the history."""
    return {"model": run.net.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "generator": run.generator.get_state(),
            "average": run.average.state_dict() if run.average is not None else None,
            "history": run.history.as_dict(), "epoch": run.epoch, "step": run.step}


class Checkpoints:
    """After every epoch: checkpoint-last.pt with the training state, and checkpoint-best.pt when validation improved;
    both are models ``load`` reads (the judged weights)."""

    def __init__(self, folder: Path, counts: list[int], run_info: dict):
        self.last, self.best, self.counts, self.run_info = folder / "checkpoint-last.pt", folder / "checkpoint-best.pt", counts, run_info
        self.epoch = self.epochs = 0

    def on_epoch_end(self, run: Run) -> None:
        history = run.history.as_dict()
        if run.history.best_epoch == run.epoch:
            save(run.judged, self.best, run.config, history, None, self.counts)
        save(run.judged, self.last, run.config, history, None, self.counts, trainer_state=training_state(run),
             run=dict(self.run_info, epochs=run.epochs))
        self.epoch, self.epochs = run.epoch, run.epochs


class Resume:
    """Puts a stopped run's training state back before its next epoch."""

    def __init__(self, state: dict):
        self.state = state

    def on_train_start(self, run: Run) -> None:
        state = self.state
        run.net.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.generator.set_state(state["generator"])
        if run.average is not None:
            run.average.load_state_dict(state["average"])
        for f in fields(History):
            setattr(run.history, f.name, state["history"][f.name])
        run.epoch, run.step = state["epoch"], state["step"]


def saved_config(checkpoint: dict, path) -> Config | None:
    """The settings a checkpoint was trained with (None when it does not say)."""
    try:
        return Config.from_dict(checkpoint["config"]) if checkpoint["config"] is not None else None
    except (UserError, TypeError) as exc:
        raise UserError(f"{path} holds settings this program does not accept ({exc}): retrain with --train") from None


def read_resume_state(path: Path) -> tuple[Config, dict, dict]:
    """(settings, training state, run info) of an interrupted run's checkpoint-last.pt, every field checked."""
    checkpoint = read_checkpoint(path)
    state, config, info = checkpoint.get("trainer_state"), saved_config(checkpoint, path), checkpoint.get("run")
    if not isinstance(state, dict) or config is None:
        raise UserError(f"{path} holds a finished model, not a training state: resume from the run's "
                        f"checkpoint-last.pt")
    missing = [k for k, kind in STATE_FIELDS.items() if not isinstance(state.get(k), kind)]
    if missing or not isinstance(info, dict) or not {"data", "model", "model_given", "epochs"} <= set(info):
        raise UserError(f"{path} holds an incomplete training state ({', '.join(missing) or 'run'}): the file is "
                        f"damaged; start the run again")
    if state["epoch"] >= config.epochs:
        raise UserError(f"{path} is from a run that already finished all {config.epochs} epochs: its model is in "
                        f"{Path(path).parent}")
    return config, state, info


def train_with_checkpoints(config: Config, splits: Splits, folder: Path, run_info: dict, state: dict | None = None,
                           callbacks=()) -> tuple[torch.nn.Module, History]:
    """Train ``config``'s network as the root script does, with Checkpoints into ``folder`` (and from ``state`` when
    resuming); Ctrl-C raises Interrupted, which says how to go on."""
    torch.manual_seed(config.seed)
    net = init_network(config.conv_block_count, config.mobilenet_block_count, config.input_dim, config.num_classes,
                       config.device)
    history = History()
    saver = Checkpoints(folder, splits.train.class_counts(config.num_classes), run_info)
    try:
        train(net, splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, config.learning_rate,
              config.epochs, config.loss, config.optimizer, config, history,
              [*([Resume(state)] if state is not None else []), *callbacks, saver])
    except KeyboardInterrupt:
        if saver.epoch == 0:
            raise Interrupted("stopped during the first epoch; nothing was saved") from None
        raise Interrupted(f"stopped after epoch {saver.epoch} of {saver.epochs}. Best model so far: {saver.best}. "
                          f"Continue with: python -m mobilenet_lab train --resume {saver.last}") from None
    return net, history


def build_parser() -> Parser:
    who = identity()
    p = Parser(prog="python -m mobilenet_lab train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", metavar="DIR", help="path of dataset (default: the embedded sample)")
    p.add_argument("--resume", metavar="PATH", type=Path, help="continue a stopped run from its checkpoint-last.pt, "
                   "with the settings it was started with")
    p.add_argument("--model", metavar="PATH", help="also save the trained model there")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<date-time>-<arch>/)")
    p.add_argument("--name", default=who["name"], help="your name (default: %(default)s)")
    p.add_argument("--roll-number", default=who["roll_number"], help="your roll number (default: %(default)s)")
    add_flags(p, {})
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(_run, build_parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.resume is not None:
        config, state, info = read_resume_state(args.resume)
        folder, data, model = args.resume.parent, Path(info["data"]), Path(info["model"]) if info["model_given"] else None
    else:
        config, state = from_flags(args)[0], None
        folder = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{config.arch}")
        data = Path(args.data) if args.data else sample_dataset()
        model = Path(args.model) if args.model else None
    print(header(args.name, args.roll_number, config, True, {"data": data, "out": folder}))
    lock = open_run_folder(folder, training=True)
    splits = load_splits(data, config)
    print(describe_splits(splits), flush=True)
    info = {"data": str(data), "model": str(model or ""), "model_given": model is not None}
    net, history = train_with_checkpoints(config, splits, folder, info, state, [EpochLog()])
    recorded = training_figures(evaluate(net, splits.train.images, splits.train.labels), history.as_dict())
    for path in [folder / "model.pt"] + ([model] if model else []):
        save(net, path, config, history.as_dict(), recorded, splits.train.class_counts(config.num_classes))
        print(f"saved the trained model to {path}")
    scores = {}
    pred = test(net, None, splits.test.images, splits.test.labels, scores)
    text, record = report_results(net, splits, pred, scores, recorded, history.as_dict(), True,
                                  {"name": args.name, "roll_number": args.roll_number, "config": config.as_dict(),
                                   "data": str(data), "seconds": time.perf_counter() - started})
    print(text)
    write_json(folder / "metrics.json", record)
    release_folder(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
