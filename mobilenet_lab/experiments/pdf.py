"""Report.pdf from the stored results alone (``results/``) and the hand-written ``report_text/*.md``.

A section file holds ``# Heading`` / ``## Subheading`` lines, paragraphs, ``- `` bullets and ``[[figure NAME:
caption]]`` / ``[[table NAME: caption]]`` lines. Every number is a placeholder such as
``{mobilenet.test_accuracy:.2%}`` or ``{figure.grid}``; one that names no result stops the build."""
import io
import json
import re
import string
import time
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (Image, KeepTogether, PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table,
                                TableStyle)

from .. import figures as viz
from ..config import BALANCING, LOSSES, OPTIMIZERS, Config
from ..errors import UserError
from ..files import atomic_write
from ..student import identity
from .measure import ROOT

TEXT = Path(__file__).resolve().parent / "report_text"
NOT_KEPT = ROOT / "results" / "not_kept.json"  # measured in earlier studies, by hand
ARCHS = ("mobilenet", "conv4")
WIDTH = A4[0] - 4 * cm  # the text width
MOBILE_COLOR, CONV_COLOR = "#1f6fb4", "#d9731a"
NAMES = [str(i) for i in range(10)]


def load_results(folder: Path) -> dict:
    try:
        res = {"plan": json.loads((folder / "plan.json").read_text()),
               "costs": json.loads((folder / "costs.json").read_text()),
               "not_kept": json.loads((folder / "not_kept.json" if (folder / "not_kept.json").is_file()
                                       else NOT_KEPT).read_text()),
               "runs": {p.stem: json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))},
               "main": {a: json.loads((folder / "main" / f"{a}.json").read_text()) for a in ARCHS},
               "arrays": {a: dict(np.load(folder / "main" / f"{a}.npz")) for a in ARCHS}}
    except (OSError, ValueError) as exc:
        raise UserError(f"the results in {folder} are incomplete ({exc}): run python -m mobilenet_lab report "
                        f"without --only-pdf") from None
    res["groups"] = {}
    for run in res["runs"].values():
        for group, value in run["groups"]:
            res["groups"].setdefault(group, []).append((value, run))
    order = {v: i for i, v in enumerate(LOSSES + BALANCING)}
    for members in res["groups"].values():  # values in order: numbers rising (all data last), names as listed
        members.sort(key=lambda m: (order.get(m[0], 0), float("inf") if m[0] is None else
                                    m[0] if isinstance(m[0], (int, float)) else 0, str(m[0])))
    return res


def arch_key(config: dict) -> str:
    c = Config.from_dict(config)
    return f"c{c.block_counts[0]}m{c.block_counts[1]}"


_ns = SimpleNamespace


def facts(res: dict) -> dict[str, SimpleNamespace]:
    """Every number the text may name, by namespace: mobilenet and conv4 (the saved models), ratio (conv4 over
    mobilenet), data, machine, sweep, runs (each run by name), recipe (the replicates), grid and plan."""
    out = {arch: _model_facts(res, arch) for arch in ARCHS}
    m, c = out["mobilenet"], out["conv4"]
    out["ratio"] = _ns(flops=c.mflops / m.mflops, parameters=c.parameters / m.parameters,
                       latency=c.latency_ms / m.latency_ms, train_speed=m.train_ips / c.train_ips,
                       conv4_bf16_speedup=c.train_ips_bf16 / c.train_ips,
                       eval_speed=m.eval_ips / c.eval_ips, digits=round((m.test_accuracy - c.test_accuracy) * 1e4))
    data, mach = res["plan"]["data"], res["plan"]["machine"]
    counts = data["train_counts"]
    out["data"] = _ns(train=data["train"], val=data["val"], test=data["test"], dev=data["dev"] or 0,
                      imbalance=data["imbalance"], largest_class=int(np.argmax(counts)), largest=max(counts),
                      smallest_class=int(np.argmin(counts)), smallest=min(counts), side=data["side"])
    out["machine"] = _ns(cpu=mach["cpu"], cores=mach["cores"], threads=mach["torch_threads"], torch=mach["torch"],
                         python=mach["python"], bf16=", ".join(mach["bf16_flags"]) or "none")
    seeds = np.array([r["metrics"]["accuracy"] for _, r in res["groups"]["seed"] if r["status"] == "ok"])
    lr = {f"{v:g}": r["metrics"]["accuracy"] for v, r in res["groups"]["lr"] if r["status"] == "ok"}
    base = res["runs"]["baseline"]
    setting = Config.from_dict(base["config"])
    out["sweep"] = _ns(baseline=base["metrics"]["accuracy"], seeds=len(seeds), seed_min=seeds.min(),
                       seed_max=seeds.max(), seed_mean=seeds.mean(), seed_sd=seeds.std(ddof=1),
                       seed_range=round((seeds.max() - seeds.min()) * 1e4), epochs=setting.epochs,
                       batch_size=setting.batch_size, learning_rate=setting.learning_rate,
                       lr_best=max(lr, key=lr.get), lr_best_acc=max(lr.values()), lr_worst=min(lr, key=lr.get),
                       lr_worst_acc=min(lr.values()))
    named = dict(res["runs"]) | {f"{group}{1 if v is None else v:g}" if not isinstance(v, str) else f"{group}-{v}": r
                                 for group, members in res["groups"].items() for v, r in members}  # e.g. epochs1
    out["runs"] = _ns(**{re.sub(r"\W", "_", name): _run_facts(r) for name, r in named.items() if r["status"] == "ok"})
    out["recipe"] = _ns(epochs=res["main"]["mobilenet"]["config"]["epochs"],
                        **{k: v for arch in ARCHS for k, v in _recipe_facts(res, arch).items()})
    grid = {v: r["metrics"]["accuracy"] for v, r in res["groups"]["grid"] if r["status"] == "ok"}
    best = max(grid, key=grid.get)
    out["grid"] = _ns(runs=len(grid), best=best.replace(",", " conv + ") + " ConvDw", best_accuracy=grid[best],
                      only_mobile=grid.get("0,6", np.nan), only_conv=grid.get("4,0", np.nan), preset=grid.get("1,6", np.nan))
    out["plan"] = _ns(runs=len(res["runs"]), minutes=sum(r["wall_seconds"] for r in res["runs"].values()) / 60,
                      jobs=res["plan"].get("jobs", 1), not_kept=len(res["not_kept"]["rows"]))
    return out


def _model_facts(res: dict, arch: str) -> SimpleNamespace:
    m, a, data = res["main"][arch], res["arrays"][arch], res["plan"]["data"]
    cost, metrics = res["costs"][arch_key(m["config"])], m["metrics"]
    recalls = {k: v["recall"] for k, v in metrics["per_class"].items()}
    aucs = metrics["roc_auc_per_class"]
    facts_ = _ns(
        test_accuracy=metrics["accuracy"], f1_macro=metrics["f1_macro"], balanced_accuracy=metrics["balanced_accuracy"],
        dev_accuracy=m.get("dev_accuracy", float("nan")), errors=round((1 - metrics["accuracy"]) * metrics["n"]),
        parameters=cost["parameters"], mflops=cost["flops"] / 1e6, latency_ms=cost["latency"]["median_ms"],
        eval_ips=cost["eval_images_per_second"], train_ips=cost["train_images_per_second"],
        train_ips_bf16=cost.get("train_images_per_second_bf16") or float("nan"),
        epoch_seconds=data["train"] / cost["train_images_per_second"], epochs=len(m["history"]["epoch"]),
        worst_auc_class=min(aucs, key=aucs.get), auc_macro=metrics["roc_auc_macro"], tsne_n=len(a["tsne_points"]),
        rare_recall=recalls[str(int(np.argmin(data["train_counts"])))],
        first_one_sign=_one_sign(a["filters0"]), last_one_sign=_one_sign(a["filters1"]),
        wrong_shown_confidence=float(a["shown_probs"][a["wrong"]].max(1).mean()) if len(a["wrong"]) else float("nan"),
        **_confusions(metrics["confusion_matrix"]))
    blocks = cost["blocks"]
    if blocks:  # what the ConvDw blocks save against standard convolutions
        dw, std = sum(b["flops"] for b in blocks), sum(b["standard_flops"] for b in blocks)
        facts_.convdw_ratio, facts_.convdw_fewer, facts_.standard_mflops = dw / std, std / dw, (cost["flops"] - dw + std) / 1e6
        facts_.convdw_params, facts_.standard_params = (sum(b["params"] for b in blocks),
                                                       sum(b["standard_params"] for b in blocks))
    return facts_


def _one_sign(tiles: np.ndarray) -> float:
    """The share of 3x3 kernels whose weights mostly share one sign (|sum| at least half of sum |w|): weighted averages
    rather than edge detectors, whose positive and negative weights cancel."""
    kernels = tiles.reshape(-1, tiles.shape[-2] * tiles.shape[-1])
    kernels = kernels[~np.isnan(kernels).any(1)]
    return float((np.abs(kernels.sum(1)) >= 0.5 * np.abs(kernels).sum(1)).mean())


def _run_facts(r: dict) -> SimpleNamespace:
    config = Config.from_dict(r["config"])
    images = sum(r["train_counts"])
    return _ns(accuracy=r["metrics"]["accuracy"], f1=r["metrics"]["f1_macro"], seconds=r["wall_seconds"], images=images,
               steps=-(-images // config.batch_size) * config.epochs, batch_size=config.batch_size)


def _recipe_facts(res: dict, arch: str) -> dict:
    """The saved model (seed 0) and its replicates: the spread of the recipe's test accuracy, and the mean dev."""
    runs = [res["main"][arch]] + [r for v, r in res["groups"].get("recipe", []) if v.startswith(arch)]
    acc = np.array([r["metrics"]["accuracy"] for r in runs])
    return {f"{arch}_mean": acc.mean(), f"{arch}_sd": acc.std(ddof=1), f"{arch}_min": acc.min(), f"{arch}_max": acc.max(),
            f"{arch}_dev_mean": np.mean([r.get("dev_accuracy", np.nan) for r in runs]), "seeds": len(runs)}


def _confusions(cm: list[list[int]]) -> dict:
    """The two most frequent mistakes, as 'true t read as p' and their counts."""
    off = [(cm[t][p], t, p) for t in range(len(cm)) for p in range(len(cm)) if t != p]
    (n1, t1, p1), (n2, t2, p2) = sorted(off, reverse=True)[:2]
    return {"mistake1": f"{t1} read as {p1}", "mistake1_count": n1, "mistake2": f"{t2} read as {p2}", "mistake2_count": n2}


def _label(group: str, value) -> str:
    if group == "fraction":
        return f"{value or 1:g}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def fill(text: str, known: dict, where: str) -> str:
    """The text with every {placeholder} filled from ``known``; one that names no result stops the build."""
    for _, field, _, _ in string.Formatter().parse(text):
        if field is None:
            continue
        root, *path = field.split(".")
        value = known.get(root)
        for attr in path:
            value = getattr(value, attr, None)
        if value is None or not path:
            raise UserError(f"{where}: the placeholder {{{field}}} names no result: use one of "
                            f"{', '.join(sorted(known))} and an attribute of it")
    return text.format(**known)


def _make(size) -> Figure:
    return Figure(figsize=size, layout="constrained")


def _roc(res: dict, arch: str) -> dict:
    return {k: (np.array(v["fpr"]), np.array(v["tpr"]), v["auc"]) for k, v in res["main"][arch]["roc"].items()}


def fig_curves(res: dict) -> Figure:
    fig = _make((7.5, 3.0))
    for ax, key, what in zip(fig.subplots(1, 2), ("acc", "loss"), ("accuracy", "loss")):
        for arch, color in zip(ARCHS, (MOBILE_COLOR, CONV_COLOR)):
            h = res["main"][arch]["history"]
            ax.plot(h["epoch"], h[f"val_{key}"], "o-", ms=3, color=color, label=f"{arch}: validation")
            ax.plot(h["epoch"], h[f"train_{key}"], "--", color=color, alpha=0.6, label=f"{arch}: training (augmented)")
        ax.set(xlabel="epoch", ylabel=what, **({"ylim": (0.95, 1.0)} if key == "acc" else {"yscale": "log"}))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if key == "acc":
            ax.legend()
    return fig


def fig_grid(res: dict) -> Figure:
    fig = _make((7.5, 3.1))
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1, 1.2])
    runs = {tuple(map(int, v.split(","))): r for v, r in res["groups"]["grid"] if r["status"] == "ok"}
    convs, mobiles = sorted({c for c, _ in runs}), sorted({m for _, m in runs})
    table = np.full((len(convs), len(mobiles)), np.nan)
    for (c, m), r in runs.items():
        table[convs.index(c), mobiles.index(m)] = r["metrics"]["accuracy"]
    shown = ax.imshow(table, cmap="viridis", vmin=np.nanmin(table), vmax=np.nanmax(table))
    for (i, j), v in np.ndenumerate(table):
        if v == v:
            ax.text(j, i, f"{v:.4f}", ha="center", va="center", fontsize=7, color="white" if v < np.nanmean(table) else "black")
    ax.set_xticks(range(len(mobiles)), mobiles)
    ax.set_yticks(range(len(convs)), convs)
    ax.set(xlabel="ConvDw blocks", ylabel="conv blocks", title="test accuracy")
    fig.colorbar(shown, ax=ax, shrink=0.8)
    for (c, m), r in runs.items():  # errors on a log scale: the good networks differ by tenths of a percent
        flops, error = res["costs"][f"c{c}m{m}"]["flops"] / 1e6, 1 - r["metrics"]["accuracy"]
        ax2.scatter(flops, error, color=CONV_COLOR if m == 0 else MOBILE_COLOR, s=18)
        ax2.annotate(f"{c}+{m}", (flops, error), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax2.set(xscale="log", yscale="log", xlabel="MFLOPs per image (log scale)", ylabel="test error (log scale)",
            title="error against cost (conv + ConvDw blocks)")
    ax2.grid(alpha=0.3)
    return fig


def fig_confusion(res: dict) -> Figure:
    fig = _make((7.5, 3.3))
    for ax, arch in zip(fig.subplots(1, 2), ARCHS):
        cm_ = np.array(res["main"][arch]["metrics"]["confusion_matrix"])
        off = cm_ - np.diag(np.diag(cm_))  # the diagonal would drown the errors
        shown = ax.imshow(off, cmap="Reds")
        for (i, j), v in np.ndenumerate(cm_):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=5.5 if i == j else 6.5,
                    color="0.4" if i == j else ("white" if v > off.max() / 2 else "black"))
        ax.set_xticks(range(10), NAMES)
        ax.set_yticks(range(10), NAMES)
        ax.set(xlabel="predicted class", ylabel="true class", title=f"{arch}: {int(off.sum())} errors")
        fig.colorbar(shown, ax=ax, shrink=0.75, label="errors (off the diagonal)")
    return fig


def _shown(res: dict, arch: str) -> tuple:
    a = res["arrays"][arch]
    return a["shown_images"], a["shown_true"], a["shown_pred"], a["shown_probs"], a["correct"], a["wrong"]


def fig_predictions(res: dict, arch: str) -> Figure:
    images, y_true, y_pred, probs, correct, wrong = _shown(res, arch)
    m = res["main"][arch]["metrics"]
    return viz.plot_predictions(_make, images, y_true, y_pred, probs, NAMES, correct, wrong,
                                round((1 - m["accuracy"]) * m["n"]))


def fig_gradcam(res: dict, arch: str) -> Figure:
    images, y_true, y_pred, probs, correct, wrong = _shown(res, arch)
    a = res["arrays"][arch]
    rows = [(label, color, idx, a[f"gradcam{k}"].astype(np.float32)) for k, (label, color, idx) in enumerate([
        ("correct: map for the\npredicted (true) class", viz.CORRECT_COLOR, correct),
        ("wrong: map for the\npredicted class", viz.WRONG_COLOR, wrong), ("wrong: map for the\ntrue class", viz.WRONG_COLOR, wrong)])]
    return viz.plot_gradcam(_make, images, y_true, y_pred, probs, NAMES, rows)


def fig_filters(res: dict, arch: str) -> Figure:
    m, a = res["main"][arch], res["arrays"][arch]
    return viz.plot_filters(_make, [(m[f"filters{k}_title"], a[f"filters{k}"]) for k in range(2) if f"filters{k}" in a])


def fig_activations(res: dict, arch: str) -> Figure:
    m, a = res["main"][arch], res["arrays"][arch]
    layers = [(m[f"activations{k}_title"], a[f"activations{k}"].astype(np.float32)) for k in range(20)
              if f"activations{k}" in a]
    return viz.plot_activations(lambda size: _make((size[0], size[1] * 0.8)), layers)


def fig_roc(res: dict) -> Figure:
    fig = _make((7.5, 3.3))
    for ax, arch in zip(fig.subplots(1, 2), ARCHS):
        viz.draw_roc(ax, _roc(res, arch), res["main"][arch]["metrics"]["n"],
                     f"{arch}: macro AUC {res['main'][arch]['metrics']['roc_auc_macro']:.5f}")
    return fig


def fig_auc_bars(res: dict) -> Figure:
    fig = _make((7.5, 2.2))
    ax = fig.subplots()
    x = np.arange(10)
    for k, (arch, color) in enumerate(zip(ARCHS, (MOBILE_COLOR, CONV_COLOR))):
        misses = [1 - res["main"][arch]["metrics"]["roc_auc_per_class"][n] for n in NAMES]
        ax.bar(x + (k - 0.5) * 0.4, misses, width=0.4, color=color, label=arch)
    ax.set_xticks(x, NAMES)
    ax.set(xlabel="class", ylabel="1 − AUC")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return fig


def fig_tsne(res: dict) -> Figure:
    fig = _make((7.5, 3.7))
    for ax, arch in zip(fig.subplots(1, 2), ARCHS):
        a = res["arrays"][arch]
        viz.draw_tsne(ax, a["tsne_points"], a["tsne_truth"], a["tsne_guess"], NAMES, legend=False)
        ax.set_title(f"{arch} ({res['main'][arch]['tsne_dims']})")
    return fig


def fig_sweeps(res: dict) -> Figure:
    fig = _make((7.5, 4.6))
    axes = fig.subplots(2, 3).ravel()
    seeds = [r["metrics"]["accuracy"] for _, r in res["groups"]["seed"] if r["status"] == "ok"]
    for ax, (group, title) in zip(axes, (("loss", "loss function"), ("batch", "batch size"), ("lr", "peak learning rate"),
                                         ("epochs", "epochs"), ("fraction", "share of the training data"),
                                         ("balance", "imbalance handling"))):
        points = [(_label(group, v), r["metrics"]["accuracy"]) for v, r in res["groups"][group] if r["status"] == "ok"]
        if group == "balance":  # the losses made for imbalance belong here too
            points += [(v, r["metrics"]["accuracy"]) for v, r in res["groups"]["loss"] if v in ("weighted-ce", "balanced-softmax")]
        ax.axhspan(min(seeds), max(seeds), color="0.85", label="baseline over seeds")
        if group in ("loss", "balance"):
            ax.bar(range(len(points)), [a for _, a in points], color=MOBILE_COLOR)
            ax.set_xticks(range(len(points)), [p for p, _ in points], rotation=30, ha="right")
        else:
            ax.plot(range(len(points)), [a for _, a in points], "o-", color=MOBILE_COLOR)
            ax.set_xticks(range(len(points)), [p for p, _ in points])
        ax.set(ylim=(max(0, min(a for _, a in points) - 0.01), 1.0), title=title,
               ylabel="test accuracy" if ax in (axes[0], axes[3]) else "")
        ax.grid(axis="y", alpha=0.3)
    axes[3].legend(loc="lower right")  # the one panel with room: the bars of the others reach down
    return fig


FIGURES = {"curves": fig_curves, "grid": fig_grid, "confusion": fig_confusion, "roc": fig_roc, "auc_bars": fig_auc_bars,
           "tsne": fig_tsne, "sweeps": fig_sweeps,
           **{f"{kind}_{arch}": (lambda f, a: lambda res: f(res, a))(f, arch) for arch in ARCHS
              for kind, f in (("predictions", fig_predictions), ("gradcam", fig_gradcam), ("filters", fig_filters),
                              ("activations", fig_activations))}}


def tab_headline(res: dict, known: dict) -> list[list[str]]:
    rows = [["", "test accuracy", "macro F1", "dev accuracy", "parameters", "MFLOPs", "latency", "time / epoch"]]
    for arch in ARCHS:
        f = known[arch]
        rows.append([arch, f"{f.test_accuracy:.2%}", f"{f.f1_macro:.4f}", f"{f.dev_accuracy:.2%}", f"{f.parameters:,}",
                     f"{f.mflops:.1f}", f"{f.latency_ms:.2f} ms", f"{f.epoch_seconds:.0f} s"])
    return rows


def tab_setup(res: dict, known: dict) -> list[list[str]]:
    d, mach, recipe = known["data"], known["machine"], Config()
    return [["machine", f"{mach.cpu}, {mach.cores} cores, {mach.threads} torch threads, PyTorch {mach.torch}; "
                        f"bfloat16 instructions: {mach.bf16}"],
            ["data", f"{d.train:,} training and {d.val:,} validation images (imbalanced: class {d.largest_class} has "
                     f"{d.largest:,}, class {d.smallest_class} {d.smallest:,}, {d.imbalance:.2f}×), {d.test:,} test "
                     f"images, {d.dev:,} dev images (the MNIST training digits the imbalanced set left out)"],
            ["recipe (saved models)", f"{recipe.epochs} epochs, one-cycle {OPTIMIZERS[recipe.optimizer]} peaking at "
                                      f"{recipe.learning_rate:g}, batch {recipe.batch_size}, balanced-softmax loss, "
                                      f"weight average (decay up to {recipe.average_decay:g}), augmentation: rotation "
                                      f"{recipe.degrees:g}°, shift {recipe.translate:g}, scale {recipe.scale:g}, shear "
                                      f"{recipe.shear:g}°, elastic {recipe.elastic:g} px; the last epoch's weights, batch "
                                      f"norm re-measured on the training images"],
            ["sweeps", f"{known['sweep'].epochs} epochs each, plain cross-entropy, no weight average, rotation, shift and "
                       f"scale only; each changes one setting of the mobilenet baseline"],
            ["runs", f"{known['plan'].runs} training runs, {known['plan'].minutes:.0f} minutes of training, "
                     f"{known['plan'].jobs} at a time"]]


def tab_blocks(res: dict, known: dict) -> list[list[str]]:
    rows = [["ConvDw block", "FLOPs", "standard 3×3 conv", "ratio", "1/N + 1/9", "parameters", "standard"]]
    for b in res["costs"]["c1m6"]["blocks"]:
        rows.append([b["name"].split("  ")[1], f"{b['flops'] / 1e6:.2f} M", f"{b['standard_flops'] / 1e6:.2f} M",
                     f"{b['flops'] / b['standard_flops']:.4f}", f"{b['formula']:.4f}", f"{b['params']:,}",
                     f"{b['standard_params']:,}"])
    return rows


def tab_recall(res: dict, known: dict) -> list[list[str]]:
    counts = res["plan"]["data"]["train_counts"]
    rows = [["class", "training images"] + [f"{a} {w}" for a in ARCHS for w in ("recall", "precision")]]
    for i, name in enumerate(NAMES):
        per = [res["main"][a]["metrics"]["per_class"][name] for a in ARCHS]
        rows.append([name, f"{counts[i]:,}"] + [f"{p[w]:.4f}" for p in per for w in ("recall", "precision")])
    return rows


def tab_sweeps(res: dict, known: dict) -> list[list[str]]:
    rows = [["group", "value", "test accuracy", "macro F1", "train time"]]
    for group in ("loss", "batch", "lr", "epochs", "fraction", "balance", "seed"):
        for value, r in res["groups"][group]:
            ok = r["status"] == "ok"
            rows.append([group, _label(group, value), f"{r['metrics']['accuracy']:.4f}" if ok else r["status"],
                         f"{r['metrics']['f1_macro']:.4f}" if ok else "", f"{r['wall_seconds']:.0f} s"])
    return rows


def tab_recipe(res: dict, known: dict) -> list[list[str]]:
    rows = [["run", "seed", "test accuracy", "macro F1", "dev accuracy"]]
    for arch in ARCHS:
        m = res["main"][arch]
        rows.append([f"{arch} (saved model)", "0", f"{m['metrics']['accuracy']:.4f}", f"{m['metrics']['f1_macro']:.4f}",
                     f"{m.get('dev_accuracy', float('nan')):.4f}"])
        for value, r in res["groups"].get("recipe", []):
            if value.startswith(arch):
                rows.append([f"{arch} (this machine)", value.split(",")[1], f"{r['metrics']['accuracy']:.4f}",
                             f"{r['metrics']['f1_macro']:.4f}", f"{r.get('dev_accuracy', float('nan')):.4f}"])
    return rows


def tab_not_kept(res: dict, known: dict) -> list[list[str]]:
    rows = [["change", "seeds", "test accuracy (the recipe's)", "test digits", "dev accuracy"]]
    for row in res["not_kept"]["rows"]:
        mine, theirs = np.array(row["test"]), np.array(row["recipe_test"])
        rows.append([row["change"], ", ".join(map(str, row["seeds"])),
                     ", ".join(f"{a:.4f} ({b:.4f})" for a, b in zip(mine, theirs)),
                     f"{round((mine - theirs).mean() * 1e4):+d}",
                     ", ".join(f"{a:.4f}" for a in row.get("dev", [])) or "not measured"])
    return rows


WIDTHS = {"setup": (0.2, 0.8), "not_kept": (0.26, 0.1, 0.3, 0.09, 0.25)}  # column shares of the text width
TABLES = {"headline": tab_headline, "setup": tab_setup, "blocks": tab_blocks, "recall": tab_recall,
          "sweeps": tab_sweeps, "recipe": tab_recipe, "not_kept": tab_not_kept}


def _styles() -> dict[str, ParagraphStyle]:
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"  # DejaVu, as in the figures: ×, −, → and the like
    for name, file in (("Sans", "DejaVuSans.ttf"), ("Sans-Bold", "DejaVuSans-Bold.ttf"),
                       ("Sans-Oblique", "DejaVuSans-Oblique.ttf")):
        pdfmetrics.registerFont(TTFont(name, str(folder / file)))
    pdfmetrics.registerFontFamily("Sans", normal="Sans", bold="Sans-Bold", italic="Sans-Oblique", boldItalic="Sans-Bold")
    base = ParagraphStyle("body", fontName="Sans", fontSize=9.5, leading=13.2, spaceAfter=5)
    return {"body": base, "h1": ParagraphStyle("h1", base, fontName="Sans-Bold", fontSize=13.5, leading=17, spaceBefore=8,
                                              spaceAfter=6, keepWithNext=1),
            "h2": ParagraphStyle("h2", base, fontName="Sans-Bold", fontSize=10.5, leading=14, spaceBefore=4,
                                 keepWithNext=1),
            "title": ParagraphStyle("title", base, fontName="Sans-Bold", fontSize=19, leading=24, spaceAfter=4),
            "caption": ParagraphStyle("caption", base, fontSize=8.2, leading=10.5, textColor=colors.HexColor("#333333")),
            "cell": ParagraphStyle("cell", base, fontSize=7.6, leading=9.4, spaceAfter=0),
            "bullet": ParagraphStyle("bullet", base, leftIndent=12, bulletIndent=2)}


def _inline(text: str) -> str:
    """Escape for reportlab's mini-markup, then **bold** and *italic*."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"\*(.+?)\*", r"<i>\1</i>", re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text))


def _table(rows: list[list[str]], st: dict, shares: tuple[float, ...] | None = None) -> Table:
    cells = [[Paragraph(_inline(str(c)), st["cell"]) for c in row] for row in rows]
    table = Table(cells, colWidths=[WIDTH * w for w in shares] if shares else None, repeatRows=1, hAlign="LEFT")
    table.setStyle(TableStyle([("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                               ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f2f2f2")]),
                               ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5)]))
    return table


def _image(fig: Figure, share: float = 1.0) -> Image:
    """A figure as a picture ``share`` of the text width at most."""
    fig.suptitle("")  # the caption says what the figure shows
    buffer = io.BytesIO()
    with matplotlib.rc_context(viz.STYLE):
        fig.savefig(buffer, format="png", dpi=200, facecolor="white")
    width, height = fig.get_size_inches()
    scale = min(1.0, share * WIDTH / (width * 72))
    buffer.seek(0)
    return Image(buffer, width=width * 72 * scale, height=height * 72 * scale)


def story(res: dict, known: dict, st: dict) -> list:
    """The flowables of every section file, in file order, with figures and tables numbered."""
    flow, numbers, texts = [], {"figure": 0, "table": 0}, {p.name: p.read_text(encoding="utf-8") for p in sorted(TEXT.glob("*.md"))}
    marks = re.findall(r"\[\[(figure|table) (\w+?)(?:_at_[\d.]+)?:", "\n".join(texts.values()))
    known = dict(known, **{kind: _ns(**{key: n for n, key in enumerate([k for m, k in marks if m == kind], 1)})
                           for kind in ("figure", "table")})  # "Figure {figure.grid}" in the text
    for name, text in texts.items():
        text = fill(text, known, f"report_text/{name}")
        for block in re.split(r"\n\s*\n", text.strip()):
            block = " ".join(line.strip() for line in block.splitlines()) if not block.startswith("- ") else block
            if block == "[[page]]":
                flow.append(PageBreak())
            elif match := re.fullmatch(r"\[\[(figure|table) ([\w.]+): (.+)\]\]", block):  # NAME_at_0.8: 80% wide
                kind, key, caption = match.groups()
                numbers[kind] += 1
                label = Paragraph(f"<b>{kind.title()} {numbers[kind]}.</b> {_inline(caption)}", st["caption"])
                key, _, scale = key.partition("_at_")
                with matplotlib.rc_context(viz.STYLE):
                    shown = _image(FIGURES[key](res), float(scale or 1)) if kind == "figure" else _table(
                        TABLES[key](res, known), st, WIDTHS.get(key))
                parts = [shown, Spacer(1, 3), label] if kind == "figure" else [label, Spacer(1, 3), shown]
                long_table = kind == "table" and len(shown._cellvalues) > 16  # may run onto the next page
                flow += (parts if long_table else [KeepTogether(parts)]) + [Spacer(1, 8)]
            elif block.startswith("# "):
                flow.append(Paragraph(_inline(block[2:]), st["h1"]))
            elif block.startswith("## "):
                flow.append(Paragraph(_inline(block[3:]), st["h2"]))
            elif block.startswith("- "):
                flow += [Paragraph(_inline(item.strip()), st["bullet"], bulletText="•")
                         for item in re.split(r"\n- ", block[2:])]
            else:
                flow.append(Paragraph(_inline(block), st["body"]))
    return flow


def build_pdf(results: Path, pdf: Path, name: str | None = None, roll: str | None = None) -> int:
    """Write Report.pdf from ``results``; returns its page count."""
    who = identity()
    name, roll = name or who["name"], roll or who["roll_number"]
    res = load_results(Path(results))
    known = dict(facts(res), student=_ns(name=name, roll=roll, date=time.strftime("%d %B %Y")))
    st = _styles()
    flow = [Paragraph("MobileNet v1 blocks on imbalanced MNIST", st["title"]),
            Paragraph(f"Deep Learning, Assignment 3: Classification of MNIST using PyTorch<br/><b>{_inline(name)}</b>, "
                      f"roll number <b>{_inline(roll)}</b> · {known['student'].date}", st["body"]),
            Spacer(1, 6)] + story(res, known, st)
    headings = []

    def footer(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont("Sans", 7.5)
        canvas.drawString(2 * cm, 1.2 * cm, f"{name} ({roll}) · Deep Learning, Assignment 3")
        canvas.drawRightString(A4[0] - 2 * cm, 1.2 * cm, f"page {doc.page}")
        canvas.restoreState()

    class Doc(SimpleDocTemplate):
        def afterFlowable(self, flowable) -> None:  # a PDF bookmark for every section heading
            if isinstance(flowable, Paragraph) and flowable.style.name == "h1":
                key = f"s{len(headings)}"
                headings.append(key)
                self.canv.bookmarkPage(key)
                self.canv.addOutlineEntry(flowable.getPlainText(), key, level=0)

    pdf.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    doc = Doc(buffer, pagesize=A4, leftMargin=2 * cm, rightMargin=2 * cm, topMargin=1.8 * cm, bottomMargin=1.9 * cm,
              title="MobileNet v1 blocks on imbalanced MNIST", author=f"{name} ({roll})",
              subject="Deep Learning, Assignment 3", creator="mobilenet_lab")
    doc.build(flow, onFirstPage=footer, onLaterPages=footer)
    atomic_write(pdf, buffer.getvalue())
    return doc.page
