"""Run the report's experiment plan, store its results in ``results/``, and build Report.pdf from them.

    python -m mobilenet_lab report --data ./mnist --idx ../shared/data/mnist          # train what is missing
    python -m mobilenet_lab report --only-pdf --name Ali --roll-number 21L-1234        # the PDF from results/ alone
    python -m mobilenet_lab report --quick --results /tmp/quick                         # the plan on a tiny set

The plan (``plan()``) is data: sweeps that each change one setting of a sweep baseline, a grid of block counts, and
replicates of the saved models' recipe with other seeds. The two main models are the saved models themselves, evaluated
here. Each run stores its figures as one JSON file; the main models also store the small arrays their figures need (an
.npz file). A run whose result is stored is never trained again; a run stopped part-way resumes from its last epoch."""
import argparse
import concurrent.futures
import functools
import json
import multiprocessing
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import TrainingSaver, open_checkpoint, read_resume_state
from ..config import LOSSES, PRESETS, Config
from ..data import MnistCsvDataset, find_part, load_splits
from ..errors import Interrupted, Parser, UserError, note, run_cli
from ..figures import activation_data, filter_data, gradcam_data, pick_examples, tsne_data
from ..files import write_json
from ..malloc import keep_freed_memory
from ..metrics import compute_metrics, roc_curves
from ..model import count_parameters, cpu_has_bf16, init_network, seed_everything, set_normalization
from ..sample import sample_dataset
from ..tools.explain import layer_costs, network_flops
from ..training import Callback, TrainingDiverged, evaluate, train
from .bench import train_rate
from .measure import ROOT, duration, latency, machine
from .pdf import build_pdf
from .seeds import left_out_digits

FORMAT = "mobilenet_lab.report-results/2"
# How the sweeps differ from the recipe: plain, short and in float32, so that one setting at a time shows.
SWEEP_BASE = dict(loss="ce", average_decay=0.0, elastic=0.0, shear=0.0, epochs=3, precision="fp32")
SWEEPS = {  # group: (the setting it changes, its values); the baseline's value is among them
    "loss": ("loss", LOSSES),
    "batch": ("batch_size", (32, 64, 128, 256)),
    "lr": ("learning_rate", (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)),
    "epochs": ("epochs", (1, 2, 3, 5, 10)),
    "fraction": ("train_size", (0.1, 0.25, 0.5, None)),
    "balance": ("balance", ("none", "sampler")),
    "seed": ("seed", (0, 1, 2, 3, 4)),
}
GRID = [(c, m) for c in (0, 1, 2, 4) for m in (0, 2, 4, 6) if c + m and (c <= 2 or m == 0)]
REPLICATE_SEEDS = (1, 2)  # the saved models are seed 0
QUICK = {"train": 400, "val": 100, "test": 200, "epochs": 1}


@dataclass(frozen=True)
class RunSpec:
    """One training run: a name, the Config it trains (the sweep baseline or the recipe, overridden), and the (group,
    value) pairs it stands for in the report."""
    name: str
    config: Config
    groups: tuple[tuple[str, object], ...]


def short(key: str, value) -> str:
    """A run's name from the setting it changes, e.g. lr0.01, batch32, loss-focal."""
    if key == "train_size":
        return f"fraction{value or 1:g}"
    prefix = {"loss": "loss-", "batch_size": "batch", "learning_rate": "lr", "epochs": "epochs", "balance": "balance-",
              "seed": "seed"}[key]
    return f"{prefix}{value:g}" if isinstance(value, float) else f"{prefix}{value}"


def plan(quick: bool = False) -> list[RunSpec]:
    """Every run of the report, each once: runs with equal Configs are one run in several groups."""
    epochs = QUICK["epochs"] if quick else None
    base = Config(**SWEEP_BASE) if not quick else Config(**dict(SWEEP_BASE, epochs=epochs))
    specs: dict[str, RunSpec] = {}

    def add(name: str, config: Config, group: str, value) -> None:
        if config.preset != "custom":  # block counts that are a preset's: the same run as the preset's
            config = replace(config, arch=config.preset, conv_blocks=None, mobilenet_blocks=None)
        same = next((s for s in specs.values() if s.config == config), None)
        if same is not None:
            specs[same.name] = replace(same, groups=same.groups + ((group, value),))
        else:
            specs[name] = RunSpec(name, config, ((group, value),))

    for group, (key, values) in SWEEPS.items():
        for value in values:
            changed = replace(base, **{key: value if not (quick and key == "epochs") else min(value, 2)})
            add("baseline" if changed == base else short(key, value), changed, group, value)
    for conv, mobile in GRID:
        add(f"c{conv}m{mobile}", replace(base, conv_blocks=conv, mobilenet_blocks=mobile), "grid", f"{conv},{mobile}")
    for arch in PRESETS:  # the saved models' own settings, with other seeds
        saved = open_checkpoint(ROOT / "saved_models" / f"{arch}.pt", "cpu").config
        for seed in REPLICATE_SEEDS:
            add(f"recipe-{arch}-seed{seed}", replace(saved, seed=seed, epochs=epochs or saved.epochs), "recipe",
                f"{arch},{seed}")
    return list(specs.values())


@functools.cache
def _part_sizes(data: Path) -> tuple[int, int]:
    return len(MnistCsvDataset(find_part(data, "train"))), len(MnistCsvDataset(find_part(data, "test")))


def data_config(config: Config, data: Path, quick: bool) -> Config:
    """The sizes a run loads: the Config's, or with ``quick`` at most QUICK's images of each split."""
    if not quick:
        return config
    n_train, n_test = _part_sizes(data)
    val = min(QUICK["val"], n_train // 4)
    base = min(QUICK["train"], n_train - val)
    train = base if config.train_size is None else max(10, round(base * config.train_size))
    return replace(config, val_size=val, test_size=min(QUICK["test"], n_test), train_size=train)


def summarise(net, splits, history, started: float, dev=None, pred=None) -> dict:
    """The figures a run stores: test metrics, history, timing, size, and the dev accuracy when given (``pred``: the
    test predictions, when already made)."""
    pred = pred if pred is not None else evaluate(net, splits.test.images, splits.test.labels)
    metrics = compute_metrics(splits.test.labels, pred.labels, pred.probs, splits.class_names)
    record = {"status": "ok", "metrics": {k: v for k, v in metrics.items() if k != "class_names"},
              "test_loss": pred.loss, "history": history, "parameters": count_parameters(net),
              "train_counts": splits.train.class_counts(splits.num_classes), "wall_seconds": time.perf_counter() - started}
    if dev is not None:
        record["dev_accuracy"] = evaluate(net, *dev).accuracy
    return record


class _Progress(Callback):
    def __init__(self, name: str):
        self.name = name

    def on_epoch_end(self, run) -> None:
        h = run.history
        print(f"      {self.name} epoch {h.epoch[-1]}/{run.config.epochs}: val acc {h.val_acc[-1]:.4f} "
              f"({h.seconds[-1]:.1f}s)", flush=True)


def execute(spec: RunSpec, data: Path, idx: Path | None, quick: bool, scratch: Path, threads: int | None) -> dict:
    """Train one spec (resuming a stopped one), and return what it stores."""
    if threads:
        torch.set_num_threads(threads)
    started, config = time.perf_counter(), data_config(spec.config, data, quick)
    splits = load_splits(data, config)
    saver = TrainingSaver(scratch / spec.name, splits.class_names, splits.train.class_counts(10), {"data": str(data)})
    resume = None
    if saver.last_path.is_file():
        stopped = read_resume_state(saver.last_path)
        resume = stopped.trainer_state if stopped.config == config else None
    seed_everything(config.seed)
    net = init_network(*config.block_counts, config.input_dim, config.num_classes, device="cpu")
    set_normalization(net, splits.train.images)
    try:
        net, history = train(net, splits.train.images, splits.train.labels, splits.val.images, splits.val.labels,
                             config=config, callbacks=[saver, _Progress(spec.name)], resume=resume)
    except TrainingDiverged as exc:  # a sweep value can be too large: record it, go on with the plan
        return {"status": "diverged", "message": str(exc), "wall_seconds": time.perf_counter() - started,
                "parameters": count_parameters(net)}
    dev = left_out_digits(idx, splits) if idx is not None and spec.groups[0][0] == "recipe" else None
    record = summarise(net, splits, history.as_dict(), started, dev)
    for path in (saver.last_path, saver.best_path):
        path.unlink(missing_ok=True)
    return record


def thinned_roc(y_true, probs, names, points: int = 200) -> dict:
    """Each class's ROC curve with at most ``points`` points, keeping both ends and the steep start."""
    out = {}
    for name, (fpr, tpr, auc) in roc_curves(y_true, probs, names).items():
        keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, points).round().astype(int), np.arange(min(len(fpr), 20))])
        out[name] = {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(), "auc": auc}
    return out


def describe_saved(arch: str, data: Path, idx: Path | None, quick: bool, out: Path, tsne: int) -> dict:
    """A saved model, evaluated on the test set (and the dev digits): its figures and the arrays of its plots."""
    started = time.perf_counter()
    saved = open_checkpoint(ROOT / "saved_models" / f"{arch}.pt", "cpu")
    config = data_config(saved.config, data, quick)
    splits = load_splits(data, config)
    dev = left_out_digits(idx, splits) if idx is not None else None
    pred = evaluate(saved.net, splits.test.images, splits.test.labels)
    record = summarise(saved.net, splits, saved.history, started, dev, pred)
    record.update(config=saved.config.as_dict(), saved_metrics=saved.metrics, versions=saved.versions,
                  train_counts=saved.class_counts)
    images, y_true = splits.test.images, splits.test.labels.numpy()
    y_pred, probs = pred.labels.numpy(), pred.probs.numpy()
    record["roc"] = thinned_roc(y_true, probs, splits.class_names)
    correct, wrong = pick_examples(y_true, y_pred, probs)
    shown = np.r_[correct, wrong].astype(int)
    arrays = {"shown": shown, "shown_images": images[shown].numpy(), "shown_true": y_true[shown],
              "shown_pred": y_pred[shown], "shown_probs": probs[shown], "correct": np.arange(len(correct)),
              "wrong": np.arange(len(correct), len(shown))}
    for k, (_, _, _, cams) in enumerate(gradcam_data(saved.net, images, y_true, y_pred, correct, wrong)):
        arrays[f"gradcam{k}"] = cams.astype(np.float16)
    for k, (title, tiles) in enumerate(filter_data(saved.net)):
        arrays[f"filters{k}"], record[f"filters{k}_title"] = tiles.astype(np.float32), title
    for k, (title, maps) in enumerate(activation_data(saved.net, images[correct[:1]])):
        arrays[f"activations{k}"], record[f"activations{k}_title"] = maps.astype(np.float16), title
    t = tsne_data(saved.net, images, y_true, y_pred, tsne)
    arrays.update(tsne_points=t["points"].astype(np.float32), tsne_truth=t["truth"], tsne_guess=t["guess"])
    record.update(tsne_dims=t["dims"], tsne_total=t["total"])
    np.savez_compressed(out / "main" / f"{arch}.npz", **arrays)
    return record


def costs(config: Config, quick: bool) -> dict:
    """What an architecture costs, measured quietly after the runs: parameters, FLOPs, latency, evaluation images/s and
    training images/s in float32 (and bfloat16 where the CPU has it) with this machine's threads; for ConvDw blocks the
    standard 3x3 convolution each replaces."""
    net = init_network(*config.block_counts, device="cpu")
    x, y, steps = torch.randint(0, 256, (2048, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (2048,)), 3 if quick else 20
    started = time.perf_counter()
    evaluate(net, x)
    layers = [r for r in layer_costs(net) if r.standard_flops]
    return {"parameters": count_parameters(net), "flops": network_flops(net),
            "latency": latency(net, 20 if quick else 200), "eval_images_per_second": len(x) / (time.perf_counter() - started),
            "train_images_per_second": train_rate(replace(config, precision="fp32"), x, y, steps),
            "train_images_per_second_bf16": train_rate(replace(config, precision="bf16"), x, y, steps)
            if cpu_has_bf16() else None,
            "blocks": [{"name": r.name, "flops": r.flops, "standard_flops": r.standard_flops, "params": r.params,
                        "standard_params": r.standard_params, "formula": r.formula} for r in layers],
            "threads": torch.get_num_threads()}


def read_result(path: Path, spec: RunSpec) -> dict | None:
    """The stored result of a spec, or None when there is none or it was run with other settings."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if result.get("format") != FORMAT or result.get("config") != spec.config.as_dict():
        note(f"{path.name} was stored for other settings; the run is trained again")
        return None
    if result["status"] == "ok" and result.get("parameters") != count_parameters(init_network(
            *spec.config.block_counts, device="cpu")):
        note(f"{path.name}: the network built by this code has another parameter count; the run is trained again")
        return None
    return result


def run_plan(args: argparse.Namespace, data: Path) -> dict:
    out = args.results
    specs = plan(args.quick)
    if args.groups:
        specs = [s for s in specs if {g for g, _ in s.groups} & set(args.groups.split(","))]
    stored = {s.name: r for s in specs if (r := read_result(out / "runs" / f"{s.name}.json", s)) is not None}
    missing = [s for s in specs if s.name not in stored]
    print(f"plan: {len(specs)} runs ({len(stored)} stored, {len(missing)} to train), {args.jobs} at a time", flush=True)
    if args.dry_run:
        for spec in specs:
            print(f"  {'stored  ' if spec.name in stored else 'to train'} {spec.name}  ({', '.join(g for g, _ in spec.groups)})")
        return {}
    if missing and args.only_pdf:
        raise UserError(f"{len(missing)} of {len(specs)} runs have no stored result in {out} (e.g. {missing[0].name}): "
                        f"run without --only-pdf to train them")
    started, scratch = time.perf_counter(), Path("runs") / "report-scratch"
    try:
        for k, (spec, record) in enumerate(_trained(missing, args, data, scratch), 1):
            record = dict(record, format=FORMAT, name=spec.name, groups=[list(g) for g in spec.groups],
                          config=spec.config.as_dict())
            write_json(out / "runs" / f"{spec.name}.json", record)
            stored[spec.name] = record
            left = (time.perf_counter() - started) / k * (len(missing) - k)
            print(f"[{k}/{len(missing)}] {spec.name}: {record['status']}"
                  + (f", test accuracy {record['metrics']['accuracy']:.4f}" if record["status"] == "ok" else "")
                  + f" ({duration(record['wall_seconds'])}; plan ~{duration(left)} left)", flush=True)
    except KeyboardInterrupt:
        raise Interrupted(f"{len(stored)} runs are stored in {out}; run the same command again to go on") from None
    return {"runs": stored, "seconds": time.perf_counter() - started}


def _trained(missing: list[RunSpec], args: argparse.Namespace, data: Path, scratch: Path):
    """(spec, result) for each missing run as it finishes: one after the other, or ``--jobs`` at a time in worker
    processes of one torch thread each."""
    if args.jobs == 1:
        for spec in missing:
            yield spec, execute(spec, data, args.idx, args.quick, scratch, None)
        return
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=keep_freed_memory) as pool:  # as every entry point does
        futures = {pool.submit(execute, s, data, args.idx, args.quick, scratch, 1): s for s in missing}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()


def describe_data(data: Path, quick: bool, idx: Path | None) -> dict:
    splits = load_splits(data, data_config(Config(), data, quick))
    counts = splits.train.class_counts(10)
    dev = len(left_out_digits(idx, splits)[1]) if idx is not None else None
    return {"quick": quick, "train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
            "dev": dev, "train_counts": counts, "test_counts": splits.test.class_counts(10),
            "imbalance": max(counts) / max(min(counts), 1), "side": splits.test.images.shape[-1]}


def build_parser() -> Parser:
    p = Parser(prog="python -m mobilenet_lab report", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", metavar="DIR", type=Path, help="the dataset, e.g. ./mnist from prepare (default: the "
                   "embedded sample; with --quick a 400/100/200-image cut of it)")
    p.add_argument("--idx", metavar="DIR", type=Path, help="the MNIST IDX files the dataset was built from, e.g. "
                   "../shared/data/mnist: also score the saved models and replicates on the digits it left out (dev)")
    p.add_argument("--results", metavar="DIR", type=Path, default=ROOT / "results",
                   help="folder of the stored results (default: results/ in the project)")
    p.add_argument("--pdf", metavar="PATH", type=Path, help="where to write the PDF (default: Report.pdf in the "
                   "project, or RESULTS/Report.pdf with --quick)")
    p.add_argument("--name", metavar="NAME", help="your name on the report (default: student.json's)")
    p.add_argument("--roll-number", metavar="ROLL", help="your roll number on the report (default: student.json's)")
    p.add_argument("--quick", action="store_true", help="every run on a tiny dataset for 1-2 epochs (for tests)")
    p.add_argument("--only-pdf", action="store_true", help="build the PDF from the stored results; train nothing")
    p.add_argument("--dry-run", action="store_true", help="list the runs, stored or to train, and stop")
    p.add_argument("--groups", metavar="LIST", help="train only the runs of these groups (e.g. seed,batch) and stop "
                   "before the PDF (default: the whole plan)")
    p.add_argument("--jobs", metavar="N", type=int, default=1, help="runs at a time, each with one torch thread "
                   "when above 1 (default: 1, with all threads)")
    p.add_argument("--threads", metavar="N", type=int, help="torch threads with --jobs 1 (default: all cores)")
    p.add_argument("--tsne-samples", metavar="N", type=int, help="test images in each t-SNE map (default: 2000; 150 "
                   "with --quick)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(_run, build_parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    if not 1 <= args.jobs <= 16:
        raise UserError(f"--jobs {args.jobs} must be between 1 and 16")
    if args.threads is not None:
        if not 1 <= args.threads <= 256:
            raise UserError(f"--threads {args.threads} must be between 1 and 256")
        torch.set_num_threads(args.threads)
    started, out = time.perf_counter(), args.results
    pdf = args.pdf or (out / "Report.pdf" if args.quick else ROOT / "Report.pdf")
    known = out / "plan.json"
    stored = json.loads(known.read_text()) if known.is_file() else {}
    if not args.only_pdf:
        data = args.data or (Path(stored["data_path"]) if "data_path" in stored else sample_dataset())
        summary = {"format": FORMAT, "data": describe_data(data, args.quick, args.idx), "machine": machine(),
                   "data_path": str(data)}
        if stored.get("data") not in (None, summary["data"]):
            raise UserError(f"{out} holds results of another dataset or mode: use another --results folder, or "
                            f"delete {out} to start again")
        if args.dry_run:
            run_plan(args, data)
            return 0
        write_json(known, summary)
        done = run_plan(args, data)
        if args.groups:  # a part of the plan: no PDF from it
            print(f"trained the runs of {args.groups} in {duration(time.perf_counter() - started)}")
            return 0
        print("evaluating the saved models and measuring what each architecture costs", flush=True)
        tsne = args.tsne_samples or (150 if args.quick else 2000)
        (out / "main").mkdir(parents=True, exist_ok=True)
        for arch in PRESETS:
            write_json(out / "main" / f"{arch}.json", dict(describe_saved(arch, data, args.idx, args.quick, out, tsne),
                                                           format=FORMAT))
        archs = {f"c{s.config.block_counts[0]}m{s.config.block_counts[1]}": s.config for s in plan(args.quick)}
        write_json(out / "costs.json", {name: costs(c, args.quick) for name, c in sorted(archs.items())})
        write_json(known, dict(summary, runs=len(done["runs"]), jobs=args.jobs))
    elif not stored:
        raise UserError(f"no stored results in {out} (plan.json): run without --only-pdf first")
    pages = build_pdf(out, pdf, args.name, args.roll_number)
    print(f"report: {pdf} ({pages} pages; {duration(time.perf_counter() - started)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
