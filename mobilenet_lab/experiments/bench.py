"""Benchmark: how fast this project decodes, trains and evaluates on this machine, side by side with the alternatives it
rejected and with the PyTorch MNIST example recipe.

    python -m mobilenet_lab prepare --out ./mnist-full --idx ../shared/data/mnist --full
    python -m mobilenet_lab bench --data ./mnist --full-data ./mnist-full

Sections (each printed as it finishes, all written to ``--out`` as JSON):
  decode      images/s decoding the train part into an empty cache; seconds to load it from the cache.
  throughput  training and evaluation images/s of each architecture with the chosen settings and with each
              rejected alternative (memory layout, batch size, threads, unfolded batch norm); best of 2.
  precision   training images/s in float32 and in bfloat16 autocast, side by side.
  accuracy    on ``--full-data`` (MNIST's 60,000/10,000): the recipe (3 epochs; the Config flags change it)
              and the reference recipe, test accuracy ``--checks`` times per epoch, wall time to 99.0%
              and 99.5%, and the share of each training step spent waiting for data.
  malloc      1-epoch training runs of the root script with glibc's malloc as it is and tuned to keep freed memory
              (MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ in the environment), alternately.
  memory      peak resident memory of a 1-epoch training run of the root script on ``--data``.
  grader      the grader's command, ``python <root script> --data DIR``, cold and warm.
  compare     with ``--against DIR`` (another checkout): 1-epoch training runs of both root scripts,
              alternately: training images/s and data wait of each, in one run.
Timings are never asserted anywhere; they are measured and printed."""
import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

import torch
from torch import nn

from ..config import ARCHS, Config, add_flags, from_flags
from ..data import ImageSet, load_splits
from ..errors import Parser, UserError, run_cli
from ..evaluation import evaluate
from ..files import write_json
from ..model import count_parameters, init_network
from ..reading import decode_part, find_part
from ..recipe import augment
from ..training import History, Run, train
from .measure import ROOT, cpu_has_bf16, machine, run_process, time_to
from .reference import check_steps, train_reference

SECTIONS = ("decode", "throughput", "precision", "accuracy", "malloc", "memory", "grader", "compare")
TARGETS = (0.99, 0.995)
RACE_EPOCHS = 3  # unless --epochs says otherwise: a short one-cycle reaches 99.0% soonest (docs/benchmarks.md)
SCRIPT = ROOT / "FirstName_RollNumber_02_02.py"


class MidEpochChecks:
    """Judges the kept weights ``per_epoch`` times an epoch, as validation does at its end (time to accuracy is then not
    rounded up to whole epochs); every check goes to ``records``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, train_x: torch.Tensor, per_epoch: int):
        self.x, self.y, self.train_x, self.per_epoch, self.records = x, y, train_x, per_epoch, []

    def on_step(self, run: Run) -> None:
        steps = len(run.loader)
        step = run.step - (run.epoch - 1) * steps
        if step in check_steps(steps, self.per_epoch):
            accuracy = run.validate(self.x, self.y).accuracy
            self.records.append({"epoch": run.epoch - 1 + step / steps, "accuracy": accuracy,
                                 "seconds": sum(run.history.seconds) + time.perf_counter() - run.started})

    def on_epoch_end(self, run: Run) -> None:
        h = run.history
        self.records.append({"epoch": run.epoch, "accuracy": h.val_acc[-1], "seconds": sum(h.seconds)})


def bench_decode(data: Path, config: Config) -> dict:
    part = find_part(data, "train")
    seconds = []
    with tempfile.TemporaryDirectory() as tmp, patch.dict(os.environ, MOBILENET_LAB_CACHE=tmp):
        for _ in range(2):  # into an empty cache, then from it
            started = time.perf_counter()
            n = len(decode_part(part, config.input_dim)[1])
            seconds.append(time.perf_counter() - started)
    cold, warm = seconds
    print(f"decode: {part.name}: {n:,} images decoded and cached in {cold:.2f} s ({n / cold:,.0f} images/s); "
          f"from the cache in {warm:.2f} s", flush=True)
    return {"part": str(part), "images": n, "cold_seconds": cold, "cold_images_per_second": n / cold,
            "warm_seconds": warm}


def train_rate(config: Config, x: torch.Tensor, y: torch.Tensor, steps: int, memory_format=torch.channels_last,
               threads: int | None = None) -> float:
    """Training images/s of whole steps (augmentation, forward, backward, optimiser) after 3 warm-up steps."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        torch.manual_seed(0)
        net = init_network(config.conv_block_count, config.mobilenet_block_count, config.input_dim,
                           config.num_classes, device="cpu")
        # ten epochs per timed step: the one-cycle schedule needs more steps than are taken (and not just a few)
        run = Run(net, ImageSet(x, y), config.learning_rate, 10 * (3 + steps), config.loss, config.optimizer, config,
                  History(), ())
        net.to(memory_format=memory_format)
        run.start_epoch(1)
        generator, timed = torch.Generator().manual_seed(0), 0.0
        for step in range(3 + steps):
            idx = torch.randint(0, len(y), (config.batch_size,), generator=generator)
            started = time.perf_counter()
            images = augment(x[idx].float() / 255, generator, config).contiguous(memory_format=memory_format)
            run.train_step(images, y[idx])
            timed += (time.perf_counter() - started) if step >= 3 else 0.0
        return steps * config.batch_size / timed
    finally:
        torch.set_num_threads(before)


def eval_rate(net, x: torch.Tensor, fuse: bool) -> float:
    """Evaluation images/s; unfused, the network runs inside a wrapper that evaluate does not fold."""
    net = net if fuse else nn.Sequential(net)
    evaluate(net, x[:128])  # warm-up
    started = time.perf_counter()
    evaluate(net, x)
    return len(x) / (time.perf_counter() - started)


def best_rates(section: str, data: Path, config: Config, steps: int, eval_images: int, train_variants: dict,
               eval_variants: dict, rounds: int = 2) -> dict:
    """Training and evaluation images/s of each architecture under each variant, the best of interleaved rounds (a
    busy moment hurts every variant alike). A training variant is (Config changes, train_rate keywords); an evaluation
    variant is eval_rate keywords."""
    splits = load_splits(data, config)
    x, y, test_x = splits.train.images, splits.train.labels, splits.test.images[:eval_images]
    result = {}
    for preset, (conv, mobile) in ARCHS.items():
        c, best = replace(config, conv_block_count=conv, mobilenet_block_count=mobile), {}
        for _ in range(rounds):
            for name, (changes, how) in train_variants.items():
                rate = train_rate(replace(c, **changes), x, y, steps, **how)
                best[f"train | {name}"] = max(best.get(f"train | {name}", 0.0), rate)
            torch.manual_seed(0)
            net = init_network(conv, mobile, device="cpu")
            for name, how in eval_variants.items():
                best[f"eval | {name}"] = max(best.get(f"eval | {name}", 0.0), eval_rate(net, test_x, **how))
        result[preset] = best
        for name, rate in best.items():
            print(f"{section}: {preset:<9} {name:<40} {rate:>8,.0f} images/s", flush=True)
    return result


def bench_throughput(data: Path, config: Config, steps: int, eval_images: int) -> dict:
    """The chosen settings against each rejected alternative."""
    train = {f"chosen: channels_last, batch {config.batch_size}": ({}, {}),
             "contiguous memory": ({}, {"memory_format": torch.contiguous_format}),
             "batch 64": ({"batch_size": 64}, {}), "batch 256": ({"batch_size": 256}, {}),
             "1 torch thread": ({}, {"threads": 1})}
    evaluation = {"chosen: folded BN": {"fuse": True}, "unfolded BN": {"fuse": False}}
    return {"threads_available": torch.get_num_threads(), "train_steps": steps, "eval_images_at_most": eval_images,
            "presets": best_rates("throughput", data, config, steps, eval_images, train, evaluation)}


def bench_precision(data: Path, config: Config, steps: int, eval_images: int) -> dict:
    """Training in float32 against bfloat16 autocast (--precision bf16)."""
    if not cpu_has_bf16():
        print("precision: skipped (this CPU has no bfloat16 instructions)", flush=True)
        return {"skipped": "no bfloat16 instructions"}
    train = {"fp32": ({"precision": "fp32"}, {}), "bf16": ({"precision": "bf16"}, {})}
    return best_rates("precision", data, config, steps, eval_images, train, {})


def bench_accuracy(full_data: Path, config: Config, reference_epochs: int, checks: int) -> dict:
    splits = load_splits(full_data, replace(config, val_size=1))  # every training digit but one
    train_x, train_y = torch.cat([splits.train.images, splits.val.images]), torch.cat([splits.train.labels, splits.val.labels])
    test_x, test_y = splits.test.images, splits.test.labels
    print(f"accuracy: {len(train_y):,} training and {len(test_y):,} test images from {full_data}", flush=True)
    torch.manual_seed(config.seed)
    net, h = init_network(config.conv_block_count, config.mobilenet_block_count, device="cpu"), History()
    ours_checks = MidEpochChecks(test_x, test_y, train_x, checks)
    # The test set stands in for validation, so each epoch's time includes its test passes, as the reference's does.
    train(net, train_x, train_y, test_x, test_y, config.learning_rate, config.epochs, config.loss, config.optimizer,
          config, h, [ours_checks, _EpochPrint()])
    ours = {"recipe": f"{config.arch}, {config.epochs}-epoch one-cycle {config.optimizer} peak "
                      f"{config.learning_rate:g}, batch {config.batch_size}, {config.loss} loss, weight average "
                      f"{config.average_decay:g}, shear {config.shear:g}, elastic {config.elastic:g} px, "
                      f"precision {config.precision}",
            "config": config.as_dict(), "parameters": count_parameters(net), "epochs": config.epochs,
            "test_acc": h.val_acc, "seconds": h.seconds, "step_seconds": h.step_seconds, "data_seconds": h.data_seconds,
            "checks": ours_checks.records}
    ref_h = train_reference(train_x, train_y, test_x, test_y, reference_epochs, stop_at=max(TARGETS),
                            checks_per_epoch=checks, on_epoch_end=lambda rh: print(
                                f"reference epoch {rh['epoch'][-1]}: test acc {rh['test_acc'][-1]:.4f}  "
                                f"{rh['seconds'][-1]:.1f}s", flush=True))
    ref = {"recipe": "PyTorch MNIST example: Adadelta lr 1.0, StepLR 0.7, batch 64, per-item DataLoader",
           "parameters": ref_h["parameters"], "epochs": len(ref_h["epoch"]), "test_acc": ref_h["test_acc"],
           "seconds": ref_h["seconds"], "step_seconds": ref_h["step_seconds"], "data_seconds": ref_h["data_seconds"],
           "checks": ref_h["checks"]}
    for record in (ours, ref):
        record["time_to"] = {f"{t:.3f}": time_to(record["checks"], t) for t in TARGETS}
        record["data_wait_share"] = sum(record["data_seconds"]) / max(sum(record["step_seconds"]), 1e-9)
        record["images_per_second"] = len(train_y) / (sum(record["step_seconds"]) / record["epochs"])
    for name, record in (("recipe", ours), ("reference", ref)):
        reached = {t: record["time_to"][t] for t in record["time_to"]}
        print(f"accuracy: {name:<9} best test acc {max(record['test_acc']):.4f} after {record['epochs']} epochs; "
              + "; ".join(f"to {float(t):.1%}: " + (f"{s:,.0f} s" if s else "not reached") for t, s in reached.items())
              + f"; waiting for data {100 * record['data_wait_share']:.1f}% of the training steps", flush=True)
    mine, theirs = ours["time_to"]["0.990"], ref["time_to"]["0.990"]
    ratio = mine / theirs if mine and theirs else None
    print(f"accuracy: time to 99.0%, recipe / reference: {f'{ratio:.2f}' if ratio else 'n/a'}", flush=True)
    return {"sizes": {"train": len(train_y), "test": len(test_y)}, "checks_per_epoch": checks, "recipe": ours,
            "reference": ref, "ratio_to_99": ratio}


class _EpochPrint:
    def on_epoch_end(self, run: Run) -> None:
        h = run.history
        print(f"recipe epoch {h.epoch[-1]}: test acc {h.val_acc[-1]:.4f}  {h.seconds[-1]:.1f}s (waiting for data "
              f"{h.data_seconds[-1]:.1f}s of {h.step_seconds[-1]:.1f}s)", flush=True)


def root_training(script: Path, data: Path, tmp: Path, env: dict, tag: str, extra: list[str] = ()) -> dict:
    """A 1-epoch training run of a root script as its own process: images/s of its steps and its data wait."""
    out = tmp / f"run-{tag}-{time.perf_counter_ns()}"
    run = run_process([str(script), "--data", str(data), "--train", "--epochs", "1", "--out", str(out), *extra],
                      env, peak=True)
    if run["returncode"] != 0:
        raise UserError(f"the training run of {script} failed: {run['stderr'].strip()[-300:]}")
    h = json.loads((out / "metrics.json").read_text())["history"]
    images = int(re.search(r"^\s+train\s+(\d+) images", run["stdout"], re.MULTILINE).group(1))  # its Data: block
    return {"seconds": run["seconds"], "peak_mb": run["peak_mb"], "step_seconds": h["step_seconds"][0],
            "data_seconds": h["data_seconds"][0], "images_per_second": images / h["step_seconds"][0]}


def bench_processes(section: str, data: Path, rounds: int, against: Path | None, model: Path) -> dict:
    """The sections that run the root script as a process: malloc, memory, grader, compare."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp, env = Path(tmp), dict(os.environ, MOBILENET_LAB_CACHE=str(Path(tmp) / "cache"))
        if section == "grader":
            runs = []
            for i in range(1 + rounds):
                run = run_process([sys.executable, str(SCRIPT), "--data", str(data), "--model", str(model),
                                   "--out", str(tmp / f"g{i}")], env)
                if run["returncode"] != 0:
                    raise UserError(f"the grader's command failed: {run['stderr'].strip()[-300:]}")
                accuracy = json.loads((tmp / f"g{i}" / "metrics.json").read_text())["test_accuracy"]
                runs.append({"kind": "cold" if i == 0 else "warm", "seconds": run["seconds"], "test_accuracy": accuracy})
                print(f"grader: {runs[-1]['kind']:<5} {run['seconds']:5.2f} s (test accuracy {accuracy:.4f})", flush=True)
            warm = [r["seconds"] for r in runs[1:]]
            return {"command": f"python {SCRIPT.name} --data {data}", "runs": runs, "cold_seconds": runs[0]["seconds"],
                    "warm_median_seconds": statistics.median(warm)}
        tuned = dict(env, MALLOC_MMAP_THRESHOLD_=str(32 * 2**20), MALLOC_TRIM_THRESHOLD_=str(2**30))
        variants = {"malloc": {"glibc as it is": (SCRIPT, env), "glibc keeping freed memory": (SCRIPT, tuned)},
                    "memory": {"this checkout": (SCRIPT, env)},
                    "compare": {"this checkout": (SCRIPT, env), f"{against}": (_root_script(against), env)}}[section]
        found = {name: [] for name in variants}
        for _ in range(rounds if section != "memory" else 1):
            for name, (script, run_env) in variants.items():
                found[name].append(root_training(script, data, tmp, run_env, section))
                r = found[name][-1]
                print(f"{section}: {name:<24} {r['images_per_second']:7,.0f} training images/s, data wait "
                      f"{100 * r['data_seconds'] / r['step_seconds']:.1f}%, peak {r['peak_mb'] or 0:,.0f} MB", flush=True)
        return {name: {"runs": runs, "best_images_per_second": max(r["images_per_second"] for r in runs)}
                for name, runs in found.items()}


def _root_script(folder: Path | None) -> Path:
    scripts = sorted(folder.glob("*_02_02.py")) if folder and folder.is_dir() else []
    if len(scripts) != 1:
        raise UserError(f"--against {folder} is not a checkout of this project (one *_02_02.py at its root)")
    return scripts[0]


def build_parser() -> Parser:
    p = Parser(prog="python -m mobilenet_lab bench", description=__doc__.split("\n\n")[0])
    groups = {"benchmark": p.add_argument_group("benchmark")}
    b = groups["benchmark"]
    b.add_argument("--data", metavar="DIR", required=True, type=Path, help="dataset in the assignment's layout, e.g. ./mnist")
    b.add_argument("--full-data", metavar="DIR", type=Path, help="MNIST's 60,000/10,000 split for the race, from "
                   "prepare --full (default: none, the race is skipped)")
    b.add_argument("--sections", metavar="LIST", default="decode,throughput,precision,accuracy,malloc,memory,grader",
                   help="comma-separated sections to run (default: %(default)s; compare needs --against)")
    b.add_argument("--against", metavar="DIR", type=Path, help="another checkout to compare training speed with")
    b.add_argument("--reference-epochs", metavar="N", type=int, default=3,
                   help="most epochs of the reference recipe; it stops at 99.5%% (default: %(default)s)")
    b.add_argument("--checks", metavar="N", type=int, default=4, help="test passes per epoch in the race (default: 4)")
    b.add_argument("--steps", metavar="N", type=int, default=20, help="timed steps per throughput variant (default: 20)")
    b.add_argument("--eval-images", metavar="N", type=int, default=4096, help="images per evaluation variant (default: 4096)")
    b.add_argument("--rounds", metavar="N", type=int, default=2, help="runs of each process variant (default: 2)")
    b.add_argument("--model", metavar="PATH", type=Path, default=ROOT / "saved_models" / "mobilenet.pt",
                   help="saved model for the grader section (default: saved_models/mobilenet.pt)")
    b.add_argument("--out", metavar="PATH", type=Path, default=Path("runs") / "bench.json", help="JSON file (default: %(default)s)")
    add_flags(p, groups)  # the recipe the race and the throughput train, e.g. --epochs 8 --learning-rate 0.005
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(_run, build_parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise UserError(f"unknown section {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    if min(args.reference_epochs, args.checks, args.steps, args.eval_images, args.rounds) < 1:
        raise UserError("--reference-epochs, --checks, --steps, --eval-images and --rounds must be at least 1")
    config, _ = from_flags(args, Config(epochs=RACE_EPOCHS))
    find_part(args.data, "train")
    if "compare" in sections:
        _root_script(args.against)
    results = {"arguments": {k: str(v) for k, v in vars(args).items()}, "machine": machine(), "config": config.as_dict(),
               "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, torch "
          f"{results['machine']['torch']} with {results['machine']['torch_threads']} threads", flush=True)
    started = time.perf_counter()
    for section in sections:
        if section == "decode":
            results[section] = bench_decode(args.data, config)
        elif section == "throughput":
            results[section] = bench_throughput(args.data, config, args.steps, args.eval_images)
        elif section == "precision":
            results[section] = bench_precision(args.data, config, args.steps, args.eval_images)
        elif section == "accuracy" and args.full_data is None:
            print("accuracy: skipped (no --full-data; build it with prepare --full)", flush=True)
        elif section == "accuracy":
            results[section] = bench_accuracy(args.full_data, config, args.reference_epochs, args.checks)
        else:
            results[section] = bench_processes(section, args.data, args.rounds, args.against, args.model)
        results["seconds"] = time.perf_counter() - started
        write_json(args.out, results)
    print(f"\nresults: {args.out} ({results.get('seconds', 0):.0f} s in all)")
    return 0
