"""Run the report's experiment plan, store its results in ``results/``, and build Report.pdf from them.

    python -m mobilenet_lab report --data ./mnist --idx ../shared/data/mnist --jobs 2   # train what is missing
    python -m mobilenet_lab report --only-pdf --name Ali --roll-number 21L-1234          # the PDF from results/ alone
    python -m mobilenet_lab report --quick --results /tmp/quick                          # the plan on a tiny set

The plan (``plan()``) is data: the main networks with the saved models' recipe (mobilenet, conv4, and the same network
as mobilenet with standard 3x3 convolutions in place of its ConvDw blocks), more seeds of mobilenet's recipe, sweeps
that each change one setting of a short baseline, the best value of each sweep again with more seeds, and a grid of
block counts. Each run stores its figures as one JSON file and its model in the scratch folder; the main networks
also store the arrays their figures need (an .npz file). A stored run is never trained again; a run stopped part-way
resumes from its last epoch."""
import argparse
import concurrent.futures
import json
import multiprocessing
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load, save
from ..config import Config
from ..data import MnistCsvDataset, Splits, load_splits
from ..errors import Interrupted, Parser, TrainingDiverged, UserError, note, run_cli
from ..evaluation import evaluate
from ..figures import pick_examples
from ..files import write_json
from ..metrics import compute_metrics
from ..model import count_parameters, init_network
from ..reading import find_part
from ..runs import training_figures
from ..sample import sample_dataset
from ..tools.explain import layer_costs, network_flops
from ..tools.insight import activation_data, filter_data, gradcam_data, roc_curves, tsne_data
from ..tools.prepare import load_idx_mnist, row_hashes
from ..tools.train import read_resume_state, train_with_checkpoints
from .measure import ROOT, duration, latency, machine
from .pdf import build_pdf
from .plan import MAIN, QUICK, RunSpec, plan

FORMAT = "mobilenet_lab.report-results/3"


def data_config(config: Config, sizes: tuple[int, int], quick: bool) -> Config:
    """The sizes a run loads: the Config's, or with ``quick`` at most QUICK's images of each split."""
    if not quick:
        return config
    n_train, n_test = sizes
    val = min(QUICK["val"], n_train // 4)
    base = min(QUICK["train"], n_train - val)
    train = base if config.train_size is None else max(10, round(base * config.train_size))
    return replace(config, val_size=val, test_size=min(QUICK["test"], n_test), train_size=train)


def dev_digits(idx: Path, splits: Splits) -> tuple[torch.Tensor, torch.Tensor]:
    """The dev digits: MNIST's training digits (IDX files in ``idx``) in neither the training nor the validation set,
    so never trained on and never used to choose."""
    images, labels, _, _ = load_idx_mnist(idx)
    used = set(row_hashes(torch.cat([splits.train.images, splits.val.images]).numpy().reshape(-1, *images.shape[1:])))
    keep = np.array([digest not in used for digest in row_hashes(images)], dtype=bool)
    return torch.from_numpy(images[keep]).unsqueeze(1), torch.from_numpy(labels[keep].astype(np.int64))


def execute(spec: RunSpec, data: Path, idx: Path | None, sizes: tuple[int, int], quick: bool, scratch: Path,
            threads: int | None) -> dict:
    """Train one spec (resuming a stopped one) and return what it stores; its model goes to scratch/NAME/model.pt."""
    if threads:
        torch.set_num_threads(threads)
    started, config = time.perf_counter(), data_config(spec.config, sizes, quick)
    splits, folder = load_splits(data, config), scratch / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    last, state = folder / "checkpoint-last.pt", None
    if last.is_file():
        stopped, state, _ = read_resume_state(last)
        state = state if stopped == config else None
    try:
        net, history = train_with_checkpoints(config, splits, folder, {"data": str(data), "model": "",
                                                                       "model_given": False}, state)
    except TrainingDiverged as exc:  # a sweep value can be too large: record it, go on with the plan
        return {"status": "diverged", "message": str(exc), "wall_seconds": time.perf_counter() - started}
    history = history.as_dict()
    # a resumed run's wall time counts the epochs trained before it stopped as well
    started -= sum(history["seconds"][:state["epoch"]]) if state else 0.0
    result = evaluate(net, splits.test.images, splits.test.labels)
    metrics = compute_metrics(splits.test.labels, result.probs.argmax(1), result.probs, splits.class_names)
    counts = splits.train.class_counts(config.num_classes)
    recorded = training_figures(evaluate(net, splits.train.images, splits.train.labels), history) if (
        spec.groups[0][0] == "main") else {}
    save(net, folder / "model.pt", config, history, recorded, counts)
    for path in (last, folder / "checkpoint-best.pt"):
        path.unlink(missing_ok=True)
    return {"status": "ok", "metrics": {k: v for k, v in metrics.items() if k != "class_names"},
            "test_loss": result.loss, "history": history, "parameters": count_parameters(net), "train_counts": counts,
            "dev_accuracy": evaluate(net, *dev_digits(idx, splits)).accuracy if idx is not None else None,
            "threads": torch.get_num_threads(), "wall_seconds": time.perf_counter() - started, **recorded}


def thinned_roc(y_true, probs, names, points: int = 200) -> dict:
    """Each class's ROC curve with at most ``points`` points, keeping both ends and the steep start."""
    out = {}
    for name, (fpr, tpr, auc) in roc_curves(y_true, probs, names).items():
        keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, points).round().astype(int), np.arange(min(len(fpr), 20))])
        out[name] = {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(), "auc": auc}
    return out


def describe_main(arch: str, data: Path, sizes: tuple[int, int], quick: bool, scratch: Path, out: Path,
                  tsne: int) -> dict:
    """A main network's trained model on the test set: the arrays of its figures (main/ARCH.npz) and what they say."""
    net = load(scratch / arch / "model.pt", "cpu")
    splits = load_splits(data, data_config(Config(conv_block_count=MAIN[arch][0],
                                                  mobilenet_block_count=MAIN[arch][1]), sizes, quick),
                         need_train=False)
    images, y_true = splits.test.images, splits.test.labels.numpy()
    probs = evaluate(net, images).probs.numpy()
    y_pred = probs.argmax(1)
    correct, wrong = pick_examples(y_true, y_pred, probs)
    shown = np.r_[correct, wrong].astype(int)
    arrays = {"shown_images": images[shown].numpy(), "shown_true": y_true[shown], "shown_pred": y_pred[shown],
              "shown_probs": probs[shown], "correct": np.arange(len(correct)),
              "wrong": np.arange(len(correct), len(shown)), "y_pred": y_pred.astype(np.int8)}
    record = {"roc": thinned_roc(y_true, probs, splits.class_names), "filters": []}
    for k, (_, _, _, cams) in enumerate(gradcam_data(net, images, y_true, y_pred, correct, wrong)):
        arrays[f"gradcam{k}"] = cams.astype(np.float16)
    for k, (title, kind, array) in enumerate(filter_data(net)):
        arrays[f"filters{k}"] = array.astype(np.float32)
        record["filters"].append([title, kind])
    layers = activation_data(net, images[correct[:1]])
    for k, (title, maps) in enumerate(layers):
        arrays[f"activations{k}"] = maps.astype(np.float16)
    record["activation_titles"] = [title for title, _ in layers]
    found = tsne_data(net, images, y_true, y_pred, tsne)
    arrays.update(tsne_points=found["points"].astype(np.float32), tsne_truth=found["truth"],
                  tsne_guess=found["guess"])
    record.update(tsne_dims=found["dims"], tsne_total=found["total"], knn=found["knn"])
    np.savez_compressed(out / "main" / f"{arch}.npz", **arrays)
    return record


def costs(config: Config, quick: bool) -> dict:
    """What an architecture costs, whatever it was trained on: parameters, FLOPs, and latency and evaluation
    images/s on this machine; for ConvDw blocks the standard 3x3 convolution each replaces."""
    net = init_network(config.conv_block_count, config.mobilenet_block_count, device="cpu")
    x = torch.randint(0, 256, (512 if quick else 2048, 1, 28, 28), dtype=torch.uint8)
    started = time.perf_counter()
    evaluate(net, x)
    blocks = [r for r in layer_costs(net) if r.standard_flops]
    return {"parameters": count_parameters(net), "flops": network_flops(net),
            "latency": latency(net, 20 if quick else 200), "eval_images_per_second": len(x) / (time.perf_counter() - started),
            "blocks": [{"name": r.name, "flops": r.flops, "standard_flops": r.standard_flops, "params": r.params,
                        "standard_params": r.standard_params, "formula": r.formula} for r in blocks],
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
    return result


def run_plan(args: argparse.Namespace, data: Path, sizes: tuple[int, int]) -> dict:
    """Train every run of the plan that has no stored result, ``--jobs`` at a time; then the best values' seeds."""
    out, scratch, started, stored = args.results, args.scratch, time.perf_counter(), {}
    for stage in (1, 2):
        specs = plan(args.quick, stored)
        if args.groups:
            specs = [s for s in specs if {g for g, _ in s.groups} & set(args.groups.split(","))]
        stored = {s.name: r for s in specs if (r := read_result(out / "runs" / f"{s.name}.json", s)) is not None}
        missing = [s for s in specs if s.name not in stored]
        print(f"plan, stage {stage}: {len(specs)} runs ({len(stored)} stored, {len(missing)} to train), {args.jobs} at "
              f"a time", flush=True)
        if args.dry_run:
            for spec in specs:
                print(f"  {'stored  ' if spec.name in stored else 'to train'} {spec.name}  "
                      f"({', '.join(g for g, _ in spec.groups)})")
            return {}
        try:
            for k, (spec, record) in enumerate(_trained(missing, args, data, sizes, scratch), 1):
                record = dict(record, format=FORMAT, name=spec.name, groups=[list(g) for g in spec.groups],
                              config=spec.config.as_dict())
                write_json(out / "runs" / f"{spec.name}.json", record)
                stored[spec.name] = record
                print(f"[{k}/{len(missing)}] {spec.name}: {record['status']}"
                      + (f", test accuracy {record['metrics']['accuracy']:.4f}" if record["status"] == "ok" else "")
                      + f" ({duration(record['wall_seconds'])})", flush=True)
        except KeyboardInterrupt:
            raise Interrupted(f"{len(stored)} runs are stored in {out}; run the same command again to go on") from None
    return {"runs": stored, "seconds": time.perf_counter() - started}


def _trained(missing: list[RunSpec], args: argparse.Namespace, data: Path, sizes: tuple[int, int], scratch: Path):
    """(spec, result) for each missing run as it finishes: one after the other, or ``--jobs`` at a time in worker
    processes of one torch thread each."""
    if args.jobs == 1:
        for spec in missing:
            yield spec, execute(spec, data, args.idx, sizes, args.quick, scratch, None)
        return
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(execute, s, data, args.idx, sizes, args.quick, scratch, 1): s for s in missing}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()


def describe_data(data: Path, quick: bool, idx: Path | None, sizes: tuple[int, int]) -> dict:
    splits = load_splits(data, data_config(Config(), sizes, quick))
    counts = splits.train.class_counts(10)
    return {"quick": quick, "path": str(data), "train": len(splits.train), "val": len(splits.val),
            "test": len(splits.test), "dev": len(dev_digits(idx, splits)[1]) if idx is not None else None,
            "train_counts": counts, "test_counts": splits.test.class_counts(10),
            "imbalance": max(counts) / max(min(counts), 1), "side": splits.test.images.shape[-1]}


def build_parser() -> Parser:
    p = Parser(prog="python -m mobilenet_lab report", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", metavar="DIR", type=Path, help="the dataset, e.g. ./mnist from prepare (default: the "
                   "embedded sample; with --quick a 400/100/200-image cut of it)")
    p.add_argument("--idx", metavar="DIR", type=Path, help="the MNIST IDX files the dataset was built from, e.g. "
                   "../shared/data/mnist: also score every run on the digits it left out (dev)")
    p.add_argument("--results", metavar="DIR", type=Path, default=ROOT / "results",
                   help="folder of the stored results (default: results/ in the project)")
    p.add_argument("--scratch", metavar="DIR", type=Path, help="folder for each run's model and checkpoints "
                   "(default: runs/report-RESULTS beside the results folder)")
    p.add_argument("--pdf", metavar="PATH", type=Path, help="where to write the PDF (default: Report.pdf in the "
                   "project, or RESULTS/Report.pdf with --quick)")
    p.add_argument("--name", metavar="NAME", help="your name on the report (default: student.json's)")
    p.add_argument("--roll-number", metavar="ROLL", help="your roll number on the report (default: student.json's)")
    p.add_argument("--date", metavar="TEXT", help="the date on the title page (default: today)")
    p.add_argument("--quick", action="store_true", help="every run on a tiny dataset for 1-2 epochs (for tests)")
    p.add_argument("--only-pdf", action="store_true", help="build the PDF from the stored results; train nothing")
    p.add_argument("--dry-run", action="store_true", help="list the runs, stored or to train, and stop")
    p.add_argument("--groups", metavar="LIST", help="train only the runs of these groups (e.g. main,seed) and stop "
                   "before the PDF (default: the whole plan)")
    p.add_argument("--jobs", metavar="N", type=int, default=1, help="runs at a time, each with one torch thread "
                   "when above 1 (default: 1, with all threads)")
    p.add_argument("--tsne-samples", metavar="N", type=int, help="test images in each t-SNE map (default: 2000; 150 "
                   "with --quick)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(_run, build_parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    if not 1 <= args.jobs <= 16:
        raise UserError(f"--jobs {args.jobs} must be between 1 and 16")
    started, out = time.perf_counter(), args.results
    args.scratch = args.scratch or out.parent / "runs" / f"report-{out.name}"
    pdf = args.pdf or (out / "Report.pdf" if args.quick else ROOT / "Report.pdf")
    known = out / "plan.json"
    stored = json.loads(known.read_text()) if known.is_file() else {}
    if not args.only_pdf:
        data = args.data or (Path(stored["data"]["path"]) if stored.get("data") else sample_dataset())
        sizes = tuple(len(MnistCsvDataset(find_part(data, part))) for part in ("train", "test"))
        summary = {"format": FORMAT, "data": describe_data(data, args.quick, args.idx, sizes), "machine": machine()}
        if stored.get("data") not in (None, summary["data"]):
            raise UserError(f"{out} holds results of another dataset or mode: use another --results folder, or "
                            f"delete {out} to start again")
        if args.dry_run:
            run_plan(args, data, sizes)
            return 0
        write_json(known, summary)
        done = run_plan(args, data, sizes)
        if args.groups:  # a part of the plan: no PDF from it
            print(f"trained the runs of {args.groups} in {duration(time.perf_counter() - started)}")
            return 0
        print("describing the main networks and measuring what each architecture costs", flush=True)
        (out / "main").mkdir(parents=True, exist_ok=True)
        for arch in MAIN:
            write_json(out / "main" / f"{arch}.json", dict(describe_main(
                arch, data, sizes, args.quick, args.scratch, out, args.tsne_samples or (150 if args.quick else 2000)),
                format=FORMAT))
        archs = {f"c{s.config.conv_block_count}m{s.config.mobilenet_block_count}": s.config
                 for s in plan(args.quick) if s.groups[0][0] in ("main", "grid")}
        write_json(out / "costs.json", {name: costs(c, args.quick) for name, c in sorted(archs.items())})
        write_json(known, dict(summary, runs=len(done["runs"]), jobs=args.jobs,
                               minutes=sum(r["wall_seconds"] for r in done["runs"].values()) / 60))
    elif not stored:
        raise UserError(f"no stored results in {out} (plan.json): run without --only-pdf first")
    pages = build_pdf(out, pdf, args.name, args.roll_number, args.date)
    print(f"report: {pdf} ({pages} pages; {duration(time.perf_counter() - started)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
