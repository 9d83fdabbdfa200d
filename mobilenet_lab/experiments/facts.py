"""The numbers of the report, derived once from the stored results (results/): what each run scored and cost, the
seed bands, and the human names of networks and settings."""
import json
from pathlib import Path

import numpy as np

from ..config import ARCHS, Config
from ..errors import UserError
from .plan import MAIN, SWEEP_BASE, SWEEPS, plan, score

NAMES = {"mobilenet": "MobileNet-7", "c7m0": "Conv-7", "conv4": "Conv-4"}
BLOCKS = {"mobilenet": "1 conv + 6 ConvDw blocks", "c7m0": "7 conv blocks", "conv4": "4 conv blocks"}
SETTING_NAMES = {"learning_rate": "peak learning rate", "batch_size": "batch size", "epochs": "epochs",
                 "train_size": "share of the training part used", "loss": "loss function", "balance": "class balancing",
                 "seed": "seed"}
LOSS_NAMES = {"ce": "cross-entropy", "weighted-ce": "weighted cross-entropy", "balanced-softmax": "balanced softmax",
              "label-smoothing": "label smoothing"}
OPTIMIZER_NAMES = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD with Nesterov momentum"}
BALANCE_NAMES = {"none": "none", "sampler": "class-balanced batches"}


def load_results(folder: Path) -> dict:
    """plan.json, costs.json, runs/*.json, main/*.json and main/*.npz, with each run filed under its groups."""
    try:
        res = {"plan": json.loads((folder / "plan.json").read_text()),
               "costs": json.loads((folder / "costs.json").read_text()),
               "runs": {p.stem: json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))},
               "main": {a: json.loads((folder / "main" / f"{a}.json").read_text()) for a in MAIN},
               "arrays": {a: dict(np.load(folder / "main" / f"{a}.npz")) for a in MAIN}}
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"the results in {folder} are incomplete ({exc}): run python -m mobilenet_lab report "
                        f"without --only-pdf") from None
    # every section reads the whole plan: a PDF from a part of it would leave sections without their runs
    missing = [s.name for s in plan(res["plan"]["data"]["quick"], res["runs"]) if s.name not in res["runs"]]
    if missing:
        raise UserError(f"{len(missing)} runs of the plan have no stored result in {folder} (e.g. {missing[0]}): run "
                        f"python -m mobilenet_lab report without --only-pdf to train them")
    res["groups"] = {}
    for run in res["runs"].values():
        for group, value in run["groups"]:
            res["groups"].setdefault(group, []).append((value, run))
    return res


def pct(x: float) -> str:
    return f"{x:.2%}"


def digits(x: float, n: int) -> int:
    """An accuracy difference as a count of images of ``n``."""
    return round(x * n)


def value_name(key: str, value) -> str:
    if key == "loss":
        return LOSS_NAMES[value]
    if key == "balance":
        return BALANCE_NAMES[value]
    if key == "train_size":
        return f"{value or 1:g}"
    return f"{value:g}"


class Facts:
    """The numbers the text uses, derived once from the results."""

    def __init__(self, res: dict):
        self.res, data = res, res["plan"]["data"]
        self.data, self.n_test, self.has_dev = data, data["test"], bool(data.get("dev"))
        self.judge = "dev accuracy" if self.has_dev else "validation accuracy"
        self.main = {a: res["runs"][a] for a in MAIN}
        self.ok = {name: run for name, run in res["runs"].items() if run["status"] == "ok"}

    def score(self, run: dict) -> float:
        """What choices are made on: the plan's own rule (dev accuracy with dev digits, else validation accuracy)."""
        return score(run)

    def test(self, arch: str) -> float:
        return self.main[arch]["metrics"]["accuracy"]

    def recipe_seeds(self, arch: str) -> list[dict]:
        """The recipe's runs of ``arch`` that finished: the main run (seed 0) and the replicates."""
        return [self.main[arch]] + [r for v, r in self.res["groups"].get("recipe", [])
                                    if v.startswith(f"{arch},") and r["status"] == "ok"]

    def spread(self, arch: str, metric) -> tuple[float, float] | None:
        """(lowest, highest) of ``metric`` over the recipe's seeds of ``arch``, or None with one seed."""
        values = [metric(r) for r in self.recipe_seeds(arch)]
        return (min(values), max(values)) if len(values) > 1 else None

    def baseline_band(self) -> tuple[float, float, list[float]] | None:
        """The sweep baseline over its seeds: (lowest, highest, all) of the judged accuracy, or None with one seed."""
        values = [self.score(r) for _, r in self.res["groups"].get("seed", []) if r["status"] == "ok"]
        return (min(values), max(values), values) if len(values) > 1 else None

    def config(self, run: dict) -> Config:
        """The settings a run was trained with, as stored beside its results."""
        return Config.from_dict(run["config"])

    def baseline(self) -> Config:
        """The sweeps' baseline as it ran (a quick plan shortens it)."""
        run = self.res["runs"].get("baseline")
        return self.config(run) if run else Config(**SWEEP_BASE)

    def sweep(self, group: str) -> list[tuple[object, dict]]:
        """(value, run) of a sweep's finished runs, the value as the run was trained with it, in the sweep's order;
        runs that a quick plan shortened to the same value count once."""
        key, order = SWEEPS[group][0], {v: i for i, v in enumerate(SWEEPS[group][1])}
        points = {}
        for _, run in self.res["groups"].get(group, []):
            if run["status"] == "ok":
                points.setdefault(getattr(self.config(run), key), run)
        return sorted(points.items(), key=lambda p: order.get(p[0], len(order)))

    def replicates(self, group: str) -> dict[object, list[float]]:
        """For each value of a sweep that was run again with more seeds: the judged scores of all its seeds."""
        key, points = SWEEPS[group][0], dict(self.sweep(group))
        extra = {}
        for _, run in self.res["groups"].get(f"{group}-seeds", []):
            value = getattr(self.config(run), key)
            if run["status"] == "ok" and value in points:
                extra.setdefault(value, [self.score(points[value])]).append(self.score(run))
        return extra

    def cost(self, arch: str) -> dict:
        conv, mobile = MAIN.get(arch) or ARCHS[arch]
        return self.res["costs"][f"c{conv}m{mobile}"]

    def epoch_seconds(self, run: dict) -> float:
        return float(np.median(run["history"]["seconds"]))
