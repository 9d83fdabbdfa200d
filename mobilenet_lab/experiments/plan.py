"""The report's experiment plan as data: which runs it trains and what each stands for in the report."""
from dataclasses import dataclass, replace

from ..config import ARCHS, BALANCING, LOSSES, Config

MAIN = {"mobilenet": ARCHS["mobilenet"], "conv4": ARCHS["conv4"], "c7m0": (7, 0)}  # c7m0: mobilenet without ConvDw
REPLICATES = {"mobilenet": (1, 2)}  # more seeds of the recipe (the main runs are seed 0)
# How the sweeps differ from the recipe: plain and short, so that one setting at a time shows.
SWEEP_BASE = dict(loss="ce", average_decay=0.0, elastic=0.0, shear=0.0, epochs=3)
SWEEPS = {  # group: (the setting it changes, its values); the baseline's value is among them
    "seed": ("seed", (0, 1, 2, 3, 4)),
    "lr": ("learning_rate", (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)),
    "batch": ("batch_size", (32, 64, 128, 256)),
    "epochs": ("epochs", (1, 2, 3, 5, 10)),
    "fraction": ("train_size", (0.1, 0.25, 0.5, None)),
    "loss": ("loss", LOSSES),
    "balance": ("balance", BALANCING),
}
BEST_SEEDS = (1, 2)  # each sweep's best value (by dev, else validation accuracy) again with these seeds
GRID = [(c, m) for c in (0, 1, 2) for m in (0, 2, 4, 6) if c + m] + [(4, 0)]
QUICK = {"train": 400, "val": 100, "test": 200, "epochs": 1}


@dataclass(frozen=True)
class RunSpec:
    """One training run: a name, the Config it trains, and the (group, value) pairs it stands for in the report."""
    name: str
    config: Config
    groups: tuple[tuple[str, object], ...]


def short(key: str, value) -> str:
    """A run's name from the setting it changes, e.g. lr0.01, batch32, loss-focal, fraction0.5."""
    if key == "train_size":
        return f"fraction{value or 1:g}"
    prefix = {"loss": "loss-", "batch_size": "batch", "learning_rate": "lr", "epochs": "epochs", "balance": "balance-",
              "seed": "seed"}[key]
    return f"{prefix}{value:g}" if isinstance(value, float) else f"{prefix}{value}"


def plan(quick: bool = False, stored: dict | None = None) -> list[RunSpec]:
    """Every run of the report, each once (runs with equal Configs are one run in several groups), in the order they
    start: the longest first. With ``stored`` results, also each sweep's best value with BEST_SEEDS."""
    shorten = (lambda c: replace(c, epochs=min(c.epochs, 2) if c.epochs != 20 else 1)) if quick else (lambda c: c)
    base, specs = Config(**SWEEP_BASE), {}

    def add(name: str, config: Config, group: str, value) -> None:
        config = shorten(config)
        same = next((s for s in specs.values() if s.config == config), None)
        if same is not None:
            specs[same.name] = replace(same, groups=same.groups + ((group, value),))
        else:
            specs[name] = RunSpec(name, config, ((group, value),))

    for arch, (conv, mobile) in sorted(MAIN.items(), key=lambda a: -(9 * a[1][0] + a[1][1])):  # costliest first
        add(arch, Config(conv_block_count=conv, mobilenet_block_count=mobile), "main", arch)
    for arch, seeds in REPLICATES.items():
        for seed in seeds:
            add(f"{arch}-seed{seed}", replace(Config(), seed=seed), "recipe", f"{arch},{seed}")
    for group, (key, values) in SWEEPS.items():
        for value in values:
            add("baseline" if value == getattr(base, key) else short(key, value), replace(base, **{key: value}), group,
                value)
    for conv, mobile in GRID:
        add(f"c{conv}m{mobile}", replace(base, conv_block_count=conv, mobilenet_block_count=mobile), "grid",
            f"{conv},{mobile}")
    for group, (key, value) in best_values(stored or {}).items():
        for seed in BEST_SEEDS:
            add(f"{short(key, value)}-seed{seed}", replace(base, **{key: value}, seed=seed), f"{group}-seeds", value)
    return list(specs.values())


def best_values(stored: dict) -> dict[str, tuple[str, object]]:
    """For each sweep (not the seeds) whose runs are all stored: the setting and value with the best dev accuracy
    (validation accuracy without dev digits), when it is not the baseline's."""
    base, best = Config(**SWEEP_BASE), {}
    for group, (key, values) in SWEEPS.items():
        found = {v: stored.get("baseline" if v == getattr(base, key) else short(key, v)) for v in values}
        if group == "seed" or any(r is None or r["status"] != "ok" for r in found.values()):
            continue
        top = max(values, key=lambda v: score(found[v]))
        if score(found[top]) > score(found[getattr(base, key)]):  # a tie with the baseline changes nothing
            best[group] = (key, top)
    return best


def score(run: dict) -> float:
    """What choices are made on: the dev accuracy where there are dev digits, else the validation accuracy."""
    return run["dev_accuracy"] if run.get("dev_accuracy") is not None else run["history"]["final_val_acc"]
