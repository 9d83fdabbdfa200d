"""What Report.pdf says, computed from the stored results: each section's paragraphs, figures and tables.

Every sentence that judges (ahead, level, behind; the most, the best) is chosen by a condition over the results, with a
variant for each outcome they can give, so the report stays true on any data. Numbers the results lack take their
sentence and their column with them. Nothing here draws or lays out: pdf.py does that."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config
from ..model import block_schedule
from .facts import BLOCKS, LOSS_NAMES, NAMES, OPTIMIZER_NAMES, SETTING_NAMES, Facts, digits, pct, value_name
from .phrases import (against_band, compare, digit_names, extremes, first_epoch, listed, mistakes, plural,
                      ranking, times)
from .plan import MAIN, SWEEPS


@dataclass
class Block:
    """One piece of the report: kind is h1, h2, p, bullets, figure, table or page; figures and tables have a key,
    a caption and (tables) rows."""
    kind: str
    text: str = ""
    key: str = ""
    rows: list | None = None
    items: list | None = None
    width: float = 1.0


def schedule_text(conv: int, mobile: int) -> str:
    """Where the feature map halves and the channels double, from the block schedule itself."""
    schedule, side, parts = block_schedule(conv + mobile, (1, 28, 28)), 28, []
    for i, (_, out, stride) in enumerate(schedule, 1):
        if stride == 2:
            side = (side + 1) // 2
            parts.append(f"block {i} halves the map to {side}×{side} with {out} channels")
    last = next((i for i, (_, _, s) in reversed(list(enumerate(schedule, 1))) if s == 2), 0)
    tail = (f"; blocks {last + 1} to {len(schedule)} keep {side}×{side} and {schedule[-1][1]} channels"
            if last < len(schedule) else "")
    return f"block 1 maps the 28×28 digit to {schedule[0][1]} channels; " + ", ".join(parts) + tail


def intro(f: Facts, name: str, roll: str) -> list[Block]:
    d, mob, c7, c4 = f.data, f.test("mobilenet"), f.test("c7m0"), f.test("conv4")
    counts = d["train_counts"]
    most, fewest = extremes(counts)
    ratio = max(counts) / max(min(counts), 1)
    balance = (f"every digit has {max(counts):,} training images" if ratio == 1 else
               f"{digit_names(most)} {'has' if len(most) == 1 else 'each have'} the most training images "
               f"({max(counts):,}), {digit_names(fewest)} the fewest ({min(counts):,}), {ratio:.1f} times fewer")
    source = (f" The {d['dev']:,} digits of MNIST's training set that are in neither the training nor the validation "
              f"set are the dev digits." if f.has_dev else "")
    band = f.spread("mobilenet", lambda r: r["metrics"]["accuracy"])
    blocks = [Block("p", f"The three networks of this report: **MobileNet-7** (1 conv + 6 ConvDw blocks, the "
                         f"assignment's sample network), **Conv-7** (the same network with a standard 3×3 "
                         f"convolution in place of each ConvDw block: the same channels and strides) and **Conv-4** "
                         f"(4 conv blocks, the assignment's second architecture). On the {f.n_test:,} test images "
                         f"MobileNet-7 scores {pct(mob)}, Conv-7 {pct(c7)} and Conv-4 {pct(c4)}"
                         + (f" (MobileNet-7 over {len(f.recipe_seeds('mobilenet'))} seeds: {pct(band[0])} to "
                            f"{pct(band[1])})" if band else "") + ". "
                         + ranking("Conv-7", c7, "MobileNet-7", mob, band, f.n_test) + " "
                         + ranking("Conv-4", c4, "MobileNet-7", mob, band, f.n_test)),
              Block("p", f"The data is the folder “{Path(d['path']).name}”: {d['train']:,} training images, "
                         f"{d['val']:,} validation images taken from the same part, and {d['test']:,} test images. "
                         f"The classes are {'imbalanced' if ratio > 1.5 else 'nearly balanced'}: {balance}.{source}"),
              Block("p", "Terms used below. The **recipe** is the full training procedure of Table [[tab:setup]], "
                         "with which the three main networks are trained. A **sweep** is a set of short runs that "
                         "each change one setting of a simpler **baseline** (Table [[tab:setup]]). The "
                         "**validation** images judge each epoch; "
                         + ("the **dev** digits, never trained on, judge the sweeps and grids, and " if f.has_dev else
                            "they also judge the sweeps and grids (there are no dev digits here), and ")
                         + "the **test** images only report. A **seed band** is the range a result covers when "
                           "only the random seed changes."
                         + ("" if f.has_dev else " Without dev digits, the test figures are the one estimate of "
                            "accuracy on digits no choice has seen: nothing below was chosen by them."))]
    return blocks + [Block("table", "Setup: the data, the machine and the settings.", "setup", setup_rows(f)),
                     Block("table", "Where each report item of the assignment is answered.", "marks", MARKS)]


MARKS = [["report item (marks)", "answered in"],
         ["Simple conv blocks against MobileNet blocks, with reasoning (5)", "Section 1, Table [[tab:networks]]"],
         ["Without and with MobileNet blocks: ROC, curves, confusion, t-SNE (10)",
          "Section 2, Figures [[fig:curves]], [[fig:roc]], [[fig:tsne]] and [[fig:confusion]]"],
         ["Numbers of conv and MobileNet blocks against accuracy (5)",
          "Section 3, Figure [[fig:grid]], Table [[tab:grid]]"],
         ["Confusion matrices, recall and accuracy on the test set (2.5)",
          "Section 4, Figure [[fig:confusion]], Table [[tab:recall]]"],
         ["Correct and wrong predictions with their labels (2.5)",
          "Section 5, Figures [[fig:predictions]] and [[fig:gradcam]]"],
         ["Learned filters of the last convolution layer (5)",
          "Section 6, Figures [[fig:filters_mobilenet]] and [[fig:filters_conv4]]"],
         ["Loss function, batch size, learning rate, epochs, data ratio (5)",
          "Section 7, Figure [[fig:sweeps]], Table [[tab:sweeps]]"],
         ["What was learned; analysis; what was interesting (5)", "Section 8"]]


def recipe_text(c: Config) -> str:
    """A training Config in words, as the runs used it."""
    augment = (f"each image rotated up to {c.degrees:g}°, shifted up to {c.translate:.0%}, scaled up to "
               f"{c.scale:.0%}" + (f", slanted up to {c.shear:g}°" if c.shear else "")
               + (f", bent up to {c.elastic:g} pixels" if c.elastic else "") if c.augment else "no augmentation")
    return (f"{plural(c.epochs, 'epoch')} of {OPTIMIZER_NAMES[c.optimizer]} (weight decay {c.weight_decay:g}) on a "
            f"one-cycle schedule peaking at {c.learning_rate:g}; batches of {c.batch_size}; "
            f"{LOSS_NAMES[c.loss]} loss; "
            + (f"a moving average of the weights (decay up to {c.average_decay:g})" if c.average_decay else
               "no moving average of the weights")
            + f"; {augment}" + ("; class-balanced batches" if c.balance == "sampler" else ""))


def setup_rows(f: Facts) -> list[list[str]]:
    m, recipe, base = f.res["plan"]["machine"], f.config(f.main["mobilenet"]), f.baseline()
    runs, minutes = len(f.res["runs"]), sum(r["wall_seconds"] for r in f.res["runs"].values()) / 60
    jobs = f.res["plan"].get("jobs", 1)
    return [["setting", "value"],
            ["data", f"{f.data['train']:,} training, {f.data['val']:,} validation, {f.data['test']:,} test images"
                     + (f", {f.data['dev']:,} dev digits" if f.has_dev else "")],
            ["machine", f"{m['cpu']}, {m['cores']} cores, " + (f"GPU {m['gpu']}" if m.get("gpu") else "no GPU")
                        + f"; Python {m['python']}, PyTorch {m['torch']}"],
            ["runs", f"{runs} training runs, {minutes:.0f} minutes in all, " + (
                f"{jobs} at a time, one thread each" if jobs > 1 else f"one at a time, {m['torch_threads']} threads")],
            ["recipe", recipe_text(recipe)],
            ["baseline of the sweeps and grid", f"MobileNet-7, {recipe_text(base)}"]]


def standing(f: Facts, a: str, b: str) -> tuple[str | None, str]:
    """How main network ``a`` stands to ``b``: compare's word when the test digits and the dev digits (where there are
    any) agree, else None; and the sentences giving both."""
    band = f.spread(b, lambda r: r["metrics"]["accuracy"])
    test, text = compare(f.test(a), f.test(b), band, f.n_test), ranking(NAMES[a], f.test(a), NAMES[b], f.test(b),
                                                                         band, f.n_test)
    if not f.has_dev:
        return test, text
    band = f.spread(b, lambda r: r["dev_accuracy"])
    x, y = f.main[a]["dev_accuracy"], f.main[b]["dev_accuracy"]
    dev = compare(x, y, band, f.data["dev"])
    return (test if dev == test else None), text + " " + ranking(NAMES[a], x, NAMES[b], y, band, f.data["dev"],
                                                                 "dev accuracy")


def section_conv_vs_mobilenet(f: Facts) -> list[Block]:
    mob, c4 = f.main["mobilenet"], f.main["conv4"]
    cm, cc = f.cost("mobilenet"), f.cost("conv4")
    flops, params = cc["flops"] / cm["flops"], cc["parameters"] / cm["parameters"]
    cheaper = ("for a fraction of the arithmetic" if flops > 1 else
               "though here for more arithmetic than Conv-4's" if flops < 1 else "for the same arithmetic")
    return [Block("h1", "1. Conv blocks against MobileNet blocks"),
            Block("p", f"The assignment's two architectures. In MobileNet-7 {schedule_text(1, 6)}. In Conv-4 "
                       f"{schedule_text(4, 0)}. Both end with global average pooling and one fully connected layer."),
            Block("p", standing(f, "conv4", "mobilenet")[1]),
            Block("p", f"Conv-4 has {params:.2f} times MobileNet-7's parameters and costs {flops:.2f} times its "
                       f"FLOPs per image. In the runs, "
                       + times("Conv-4", f.epoch_seconds(c4), "MobileNet-7", f.epoch_seconds(mob), "time per epoch",
                               "s") + "; measured apart, "
                       + times("Conv-4", cc["latency"]["median_ms"], "MobileNet-7", cm["latency"]["median_ms"],
                               "time for one image", "ms", ".2f")
                       + f". Depthwise-separable blocks let MobileNet-7 be deeper (7 blocks against 4) {cheaper}: "
                         f"each ConvDw block replaces a 3×3 convolution by a per-channel 3×3 filter and a 1×1 mixing "
                         f"layer."),
            Block("table", "The three networks: size, cost and scores. Time per epoch: the median over the run's "
                           "epochs (validation included); latency: one image, after warm-up.", "networks",
                  network_rows(f))]


def network_rows(f: Facts) -> list[list[str]]:
    head = ["network", "blocks", "parameters", "MFLOPs", "test accuracy", "macro F1"]
    head += ["dev accuracy"] if f.has_dev else []
    rows = [head + ["validation accuracy", "time per epoch", "latency"]]
    for arch in MAIN:
        run, cost = f.main[arch], f.cost(arch)
        rows.append([NAMES[arch], BLOCKS[arch], f"{cost['parameters']:,}", f"{cost['flops'] / 1e6:.1f}",
                     pct(run["metrics"]["accuracy"]), f"{run['metrics']['f1_macro']:.4f}"]
                    + ([pct(run["dev_accuracy"])] if f.has_dev else [])
                    + [pct(run["history"]["final_val_acc"]), f"{f.epoch_seconds(run):.0f} s",
                       f"{cost['latency']['median_ms']:.2f} ms"])
    return rows


def curve_text(f: Facts) -> str:
    """What the curves of the three networks show, read off their histories."""
    parts = []
    for arch in MAIN:
        h = f.main[arch]["history"]
        reached = first_epoch(h, 0.99)
        lowest = h["epoch"][int(np.argmin(h["val_loss"]))]
        parts.append(f"{NAMES[arch]} " + (f"first reaches 99% validation accuracy at epoch {reached}" if reached else
                                          f"stays below 99% validation accuracy (best {pct(max(h['val_acc']))})")
                     + f" and has its lowest validation loss at epoch {lowest} of {len(h['epoch'])}")
    h = f.main["mobilenet"]["history"]
    below = sum(t < v for t, v in zip(h["train_acc"], h["val_acc"]))
    return ("; ".join(parts) + f". MobileNet-7's training accuracy, measured on the augmented batches with the weights "
            f"still moving, is below its validation accuracy in {below} of its {plural(len(h['epoch']), 'epoch')}.")


def lowest_auc(metrics: dict) -> str:
    per = metrics["roc_auc_per_class"]
    low = min(per.values())
    return digit_names([int(d) for d, v in per.items() if v == low])


def section_with_without(f: Facts) -> list[Block]:
    mob, c7 = f.main["mobilenet"], f.main["c7m0"]
    cm, cc = f.cost("mobilenet"), f.cost("c7m0")
    side, sentences = standing(f, "c7m0", "mobilenet")
    blocks = cm["blocks"]
    dw, std = sum(b["flops"] for b in blocks), sum(b["standard_flops"] for b in blocks)
    aucs = {a: f.main[a]["metrics"]["roc_auc_macro"] for a in ("mobilenet", "c7m0")}
    knn = {a: f.res["main"][a].get("knn") for a in ("mobilenet", "c7m0")}
    verdict = {"level": "On this evidence the ConvDw blocks cost no accuracy that these runs can measure.",
               "ahead": "On this evidence the standard convolutions bought accuracy, at the price above.",
               "behind": "On this evidence the ConvDw blocks did better than the standard convolutions they replace.",
               None: "The test and dev digits disagree, so these runs do not settle which of the two is more "
                     "accurate."}[side]
    knn_text = ("" if None in knn.values() else
                f" A number for how well the pooled features separate the digits: a 5-nearest-neighbour vote among "
                f"them is right for {pct(knn['mobilenet'])} of the test digits shown for MobileNet-7 and "
                f"{pct(knn['c7m0'])} for Conv-7 (5-fold, on the digits of the map).")
    return [Block("h1", "2. Without and with MobileNet blocks"),
            Block("p", f"Conv-7 is MobileNet-7 with a standard 3×3 convolution block in place of each of its six "
                       f"ConvDw blocks, so the two differ in that alone. The six ConvDw blocks take {dw / 1e6:.2f} "
                       f"MFLOPs per image where the standard convolutions take {std / 1e6:.2f} ({std / dw:.1f} times "
                       f"as many, the 1/N + 1/9 of the MobileNet paper block by block); Conv-7 has "
                       f"{cc['parameters'] / cm['parameters']:.1f} times the parameters (Table [[tab:networks]]), and "
                       f"in the runs "
                       + times("Conv-7", f.epoch_seconds(c7), "MobileNet-7", f.epoch_seconds(mob), "time per epoch",
                               "s") + "."),
            Block("p", f"{sentences} {verdict}"),
            Block("p", f"**Curves** (Figure [[fig:curves]]). {curve_text(f)}"),
            Block("figure", "Validation accuracy (as the error, 1 − accuracy, on a log scale) and loss per epoch of "
                            "the three networks; dashed: training, on augmented batches.", "curves"),
            Block("p", f"**ROC curves** (Figure [[fig:roc]]), one per digit against the others, from the softmax "
                       f"probabilities: the macro AUC is {aucs['mobilenet']:.5f} for MobileNet-7 and "
                       f"{aucs['c7m0']:.5f} for Conv-7"
                       + (" (both above 0.99: every digit is told from the others almost perfectly, so the false-"
                          "positive axis is on a log scale to show the corner)" if min(aucs.values()) > 0.99 else
                          " (the false-positive axis is on a log scale)")
                       + f". The lowest AUC: {lowest_auc(mob['metrics'])} for MobileNet-7, "
                         f"{lowest_auc(c7['metrics'])} for Conv-7."),
            Block("figure", "ROC curves per digit, MobileNet-7 (left) and Conv-7 (right), false-positive rate on a log "
                            "scale.", "roc"),
            Block("p", "**Confusion matrices**: Figure [[fig:confusion]] in Section 4 sets the three networks side by "
                       "side."),
            Block("p", f"**t-SNE** (Figure [[fig:tsne]]) maps the pooled features each network passes to its "
                       f"classifier into two dimensions; rings mark misclassified digits.{knn_text}"),
            Block("figure", "t-SNE maps of the pooled features of test digits, coloured by their true class: "
                            "MobileNet-7 (left) and Conv-7 (right).", "tsne")]


def section_grid(f: Facts) -> list[Block]:
    trained = {v: r for v, r in f.res["groups"].get("grid", [])}
    runs = {v: r for v, r in trained.items() if r["status"] == "ok"}
    scored = {v: f.score(r) for v, r in runs.items()}
    top = max(scored.values())
    best = [v.replace(",", " conv + ") + " ConvDw" for v in sorted(scored) if scored[v] == top]
    name = lambda v: v.replace(",", "+")  # noqa: E731
    diverged = [name(v) for v in sorted(trained) if v not in runs]
    rising = []
    for conv in sorted({int(v.split(",")[0]) for v in trained}):
        row = sorted((int(v.split(",")[1]), v) for v in trained if int(v.split(",")[0]) == conv)
        if len(row) > 2 and all(v in runs for _, v in row):
            rising.append(all(scored[a] < scored[b] for (_, a), (_, b) in zip(row, row[1:])))
    trend = ("For every number of conv blocks with three or more networks, each step up in ConvDw blocks raised the "
             + f.judge if rising and all(rising) else
             "Adding ConvDw blocks did not raise the " + f.judge + " at every step" if rising else "")
    return [Block("h1", "3. Numbers of conv blocks and MobileNet blocks"),
            Block("p", f"Networks of 0, 1 or 2 conv blocks followed by 0, 2, 4 or 6 ConvDw blocks (without blocks "
                       f"there is no network), and Conv-4, each trained as the baseline of Table [[tab:setup]] "
                       f"({plural(f.baseline().epochs, 'epoch')}) and judged by {f.judge}: "
                       f"{', '.join(name(v) for v in sorted(runs))} (conv + ConvDw)"
                       + (f"; {listed(diverged)} diverged" if diverged else "") + ". "
                       + (f"The best is {best[0]}" if len(best) == 1 else f"Tied best: {listed(best)}")
                       + f" at {pct(top)}, {against_band(top, f.baseline_band())}. "
                       + (f"{trend}." if trend else "")),
            Block("figure", f"{f.judge.capitalize()} of every block-count combination (left; rows: conv blocks, "
                            f"columns: ConvDw blocks), and its error against the FLOPs per image (right; both axes "
                            f"log; labels: conv + ConvDw blocks).", "grid"),
            Block("table", "The block-count grid: every network, its cost and scores (test accuracy reported, never "
                           "used to choose).", "grid", grid_rows(f, runs))]


def grid_rows(f: Facts, runs: dict) -> list[list[str]]:
    rows = [["conv + ConvDw", "parameters", "MFLOPs", "validation accuracy"] + (["dev accuracy"] if f.has_dev else [])
            + ["test accuracy", "minutes"]]
    for value, r in sorted(runs.items(), key=lambda kv: tuple(map(int, kv[0].split(",")))):
        cost = f.res["costs"][f"c{value.split(',')[0]}m{value.split(',')[1]}"]
        rows.append([value.replace(",", " + "), f"{cost['parameters']:,}", f"{cost['flops'] / 1e6:.1f}",
                     pct(r["history"]["final_val_acc"])] + ([pct(r["dev_accuracy"])] if f.has_dev else [])
                    + [pct(r["metrics"]["accuracy"]), f"{r['wall_seconds'] / 60:.1f}"])
    return rows


def section_confusion(f: Facts) -> list[Block]:
    counts = f.data["train_counts"]
    _, rarest = extremes(counts)
    parts = []
    for arch in MAIN:
        m = f.main[arch]["metrics"]
        errors = round((1 - m["accuracy"]) * m["n"])
        recall = ", ".join(f"{m['per_class'][str(d)]['recall']:.4f}" for d in rarest)
        parts.append(f"{NAMES[arch]} misclassifies {errors} of {m['n']:,} test digits (balanced accuracy "
                     f"{pct(m['balanced_accuracy'])}, the mean recall over digits); {mistakes(m['confusion_matrix'])}; "
                     f"the rarest training {digit_names(rarest)} {'has' if len(rarest) == 1 else 'have'} recall "
                     f"{recall}")
    loss = ("" if f.config(f.main["mobilenet"]).loss != "balanced-softmax" else
            " The main networks train with the balanced softmax loss, which adds the log of each class's share of the "
            "training images to the logits while training, so that the scores stay balanced for a balanced test set.")
    return [Block("h1", "4. Confusion matrices, recall and accuracy"),
            Block("p", ". ".join(parts) + "." + loss),
            Block("figure", "Confusion matrices on the test digits (rows: true digit). Each cell gives its count; the "
                            "colour of the cells off the diagonal shows the errors, the diagonal is shaded apart.",
                  "confusion"),
            Block("table", "Recall (the share of each digit found) and precision per digit on the test set, beside "
                           "its number of training images.", "recall", recall_rows(f))]


def recall_rows(f: Facts) -> list[list[str]]:
    rows = [["digit", "training images"] + [f"{NAMES[a]} {w}" for a in MAIN for w in ("recall", "precision")]]
    for i, count in enumerate(f.data["train_counts"]):
        per = [f.main[a]["metrics"]["per_class"][str(i)] for a in MAIN]
        rows.append([str(i), f"{count:,}"] + [f"{p[w]:.4f}" for p in per for w in ("recall", "precision")])
    return rows


def ink_share(images: np.ndarray, maps: np.ndarray) -> float:
    """The share of the Grad-CAM maps' weight that lies on ink (pixels above a fifth of full brightness)."""
    ink = images[:, 0] > 51
    return float((maps * ink).sum() / max(maps.sum(), 1e-12))


def section_predictions(f: Facts) -> list[Block]:
    a = f.res["arrays"]["mobilenet"]
    probs, wrong, correct = a["shown_probs"], a["wrong"], a["correct"]
    confidence = probs.max(1)
    parts = [f"Figure [[fig:predictions]] shows {plural(len(correct), 'correct prediction')} of MobileNet-7, of "
             f"different digits where it can, and the {plural(len(wrong), 'wrong one')} it was most confident of."]
    if len(correct):
        parts.append(f"The correct ones carry confidences (the softmax probability of the predicted digit) of "
                     f"{confidence[correct].min():.1%} to {confidence[correct].max():.1%}.")
    if len(wrong):
        parts.append(f"The wrong ones carry {confidence[wrong].min():.1%} to {confidence[wrong].max():.1%}"
                     + (": some mistakes are held with more confidence than some correct answers, so a softmax "
                        "confidence is not the chance of being right." if len(correct) and
                        confidence[wrong].max() > confidence[correct].min() else "."))
    cams = [a[f"gradcam{k}"].astype(np.float32) for k in range(3)]
    shown = a["shown_images"]
    shares = []
    if len(correct):
        shares.append(f"for the correct predictions {ink_share(shown[correct], cams[0]):.0%} of the maps' weight lies "
                      f"on the digit's strokes")
    if len(wrong):
        shares.append(f"for the wrong ones (the maps for the digit predicted) {ink_share(shown[wrong], cams[1]):.0%}")
    cam = ("Grad-CAM (Figure [[fig:gradcam]]) shows where the last block found the evidence for a digit, on its "
           "7×7 map upsampled to the image"
           + (": " + "; ".join(shares) if shares else "") + "."
           + (" The last row shows, for the wrong ones, where the evidence for the true digit was." if len(wrong)
              else ""))
    return [Block("h1", "5. Correct and wrong predictions"), Block("p", " ".join(parts)),
            Block("figure", "MobileNet-7: correct predictions (top) and the most confident wrong ones (bottom), each "
                            "with its true digit, prediction and confidence.", "predictions"),
            Block("p", cam),
            Block("figure", "Grad-CAM of MobileNet-7 on the same digits (red: most evidence): for correct "
                            "predictions, and for wrong ones both for the predicted and for the true digit.",
                  "gradcam", width=0.85)]


def filter_facts(f: Facts) -> dict:
    """The descriptors of the last convolution layers' weights, each defined in the text."""
    a, c = f.res["arrays"]["mobilenet"], f.res["arrays"]["conv4"]
    depthwise, pointwise = a["filters0"], a["filters1"]
    flat = np.abs(depthwise.reshape(len(depthwise), -1))
    one_signed = lambda k: float(((k > 0).all(1) | (k < 0).all(1)).mean())  # noqa: E731
    strength = np.sort(np.abs(pointwise), 1)[:, ::-1]
    half = (np.cumsum(strength, 1) < 0.5 * strength.sum(1, keepdims=True)).sum(1) + 1
    norms = np.sort(c["filters1"], 1)[:, ::-1]
    top = max(1, norms.shape[1] // 10)
    return {"centre": float((flat.argmax(1) == 4).mean()),
            "dw_one_signed": one_signed(depthwise.reshape(len(depthwise), -1)),
            "outputs": pointwise.shape[0], "inputs": pointwise.shape[1], "dw": len(depthwise),
            "half": int(np.median(half)), "positive": float((pointwise > 0).mean()),
            "conv_out": norms.shape[0], "conv_in": norms.shape[1], "top": top,
            "top_share": float(np.median(norms[:, :top].sum(1) / norms.sum(1))),
            "conv_one_signed": one_signed(c["filters0"].reshape(len(c["filters0"]), -1))}


def section_filters(f: Facts) -> list[Block]:
    k = filter_facts(f)
    return [Block("h1", "6. Learned filters of the last convolution layer"),
            Block("p", f"In MobileNet-7 the last convolution is the pointwise 1×1 layer of the last ConvDw block: a "
                       f"{k['outputs']}×{k['inputs']} matrix, one row per output channel, one column per input channel "
                       f"(Figure [[fig:filters_mobilenet]], right). Half of a row's absolute weight sits in its "
                       f"{k['half']} largest entries of {k['inputs']} (the median over rows): each output channel "
                       + ("leans on a few input channels" if k["half"] <= k["inputs"] // 8 else
                          "mixes many input channels")
                       + f"; {k['positive']:.0%} of the weights are positive. Beside it are the block's "
                         f"{k['dw']} depthwise 3×3 filters, the last layer that looks at space: in "
                         f"{k['centre']:.0%} of them the largest weight (in absolute value) is the centre tap (one in "
                         f"nine would be chance), and {k['dw_one_signed']:.0%} have all nine weights of one sign, "
                         f"which makes a filter a weighted average of a neighbourhood rather than an edge detector."),
            Block("figure", "MobileNet-7's last ConvDw block: its depthwise 3×3 filters (left) and the weights of its "
                            "pointwise 1×1 convolution, the last convolution layer (right); red positive, blue "
                            "negative.", "filters_mobilenet"),
            Block("p", f"Conv-4's last layer has {k['conv_out']} filters, each a stack of {k['conv_in']} 3×3 kernels, one per "
                       f"input channel: too many to show all. The rule used: for each filter, its strongest kernel "
                       f"(the largest L2 norm) is drawn (Figure [[fig:filters_conv4]], left), and the norm of every "
                       f"kernel appears in the heatmap (right). A filter's strongest {k['top']} kernels hold "
                       f"{k['top_share']:.0%} of its total norm (the median over filters), and "
                       f"{k['conv_one_signed']:.0%} of the strongest kernels have all nine weights of one sign."),
            Block("figure", "Conv-4's last convolution layer: the strongest 3×3 kernel of each filter (left) and the "
                            "L2 norm of each of its kernels, filters by input channels (right).", "filters_conv4")]


def sweep_verdict(f: Facts, group: str, scores: dict) -> str:
    """Which value of a sweep scored best, and how it stands against the baseline's seed band."""
    key, band = SWEEPS[group][0], f.baseline_band()
    top, base = max(scores.values()), getattr(f.baseline(), key)
    best = [v for v, score in scores.items() if score == top]
    if base in best:
        return "the baseline's own value scores highest" + (" (tied)" if len(best) > 1 else "")
    names = listed([value_name(key, v) for v in best])
    seeds = f.replicates(group)
    if len(best) == 1 and len(seeds.get(best[0], [])) > 1:
        again = seeds[best[0]]
        where = ("no baseline seed band to compare with" if band is None else
                 "above the baseline's seed band" if min(again) > band[1] else
                 "below the baseline's seed band" if max(again) < band[0] else "overlapping the baseline's seed band")
        return f"best {names}; over {plural(len(again), 'seed')} it scores {pct(min(again))} to {pct(max(again))}, {where}"
    return f"best {names}, on one seed: " + against_band(top, band)


def section_sweeps(f: Facts) -> list[Block]:
    band, spans, lines, rerun = f.baseline_band(), {}, [], []
    for group in ("lr", "batch", "epochs", "fraction", "loss", "balance"):
        key, points = SWEEPS[group][0], f.sweep(group)
        if not points:
            continue
        scores = {v: f.score(r) for v, r in points}
        spans[group] = max(scores.values()) - min(scores.values())
        rerun += [f"{SETTING_NAMES[key]} {value_name(key, v)} ({plural(len(seeds), 'seed')} in all)"
                  for v, seeds in f.replicates(group).items()]
        diverged = [v for v, r in f.res["groups"].get(group, []) if r["status"] != "ok"]
        lines.append(f"**{SETTING_NAMES[key].capitalize()}**: " + ", ".join(
            f"{value_name(key, v)} {pct(s)}" for v, s in scores.items()) + f"; {sweep_verdict(f, group, scores)}"
            + (f"; {listed([value_name(key, v) for v in diverged])} diverged" if diverged else "") + ".")
    widest = max(spans.values(), default=0)
    moved = [SETTING_NAMES[SWEEPS[g][0]] for g, span in spans.items() if span == widest]
    moved_text = (f"No setting changed the {f.judge}." if widest == 0 else
                  f"Of the settings, the {listed(moved)} moved the {f.judge} most, by {widest * 100:.2f} points "
                  f"between {'its' if len(moved) == 1 else 'their'} best and worst value.")
    base_text = (f"The baseline with {plural(len(band[2]), 'seed')} scores {pct(band[0])} to {pct(band[1])}: the grey "
                 f"band of Figure [[fig:sweeps]], the size of a difference that means nothing. " if band else
                 "The baseline ran with one seed, so there is no seed band to tell a real difference from noise. ")
    rerun_text = (f"Run again with more seeds (the plan does so for a sweep's best value when it beats the "
                  f"baseline's own): {listed(rerun)}. " if rerun else "")
    fraction = ("The data-ratio sweep varies the share of the training part that is used; the validation and test "
                "sets stay the same. ")
    return [Block("h1", "7. Loss function, batch size, learning rate, epochs and data ratio"),
            Block("p", f"Each sweep changes one setting of the baseline of Table [[tab:setup]] and keeps the rest; "
                       f"runs are judged by {f.judge}, and test accuracy (Table [[tab:sweeps]]) is only reported. "
                       f"{base_text}{rerun_text}{fraction}{moved_text}"),
            Block("bullets", items=lines),
            Block("figure", f"{f.judge.capitalize()} of each sweep (numbers on log axes; triangles: the values run "
                            f"again with more seeds)" + (f"; the grey band is the baseline over "
                                                         f"{plural(len(band[2]), 'seed')}." if band else "."),
                  "sweeps"),
            Block("table", "Every sweep run: the validation, dev (where there are dev digits) and test accuracy, and "
                           "its minutes of training.", "sweeps", sweep_rows(f))]


def sweep_rows(f: Facts) -> list[list[str]]:
    rows = [["setting", "value", "seed", "validation accuracy"] + (["dev accuracy"] if f.has_dev else [])
            + ["test accuracy", "minutes"]]
    for group in ("seed", "lr", "batch", "epochs", "fraction", "loss", "balance"):
        key, order = SWEEPS[group][0], {v: i for i, v in enumerate(SWEEPS[group][1])}
        runs = {r["name"]: r for _, r in f.res["groups"].get(group, []) + f.res["groups"].get(f"{group}-seeds", [])}
        for r in sorted(runs.values(), key=lambda r: (order.get(getattr(f.config(r), key), 99), f.config(r).seed)):
            ok, c = r["status"] == "ok", f.config(r)
            value = getattr(c, key)
            rows.append([SETTING_NAMES[key], value_name(key, value) if key != "seed" else str(value), str(c.seed),
                         pct(r["history"]["final_val_acc"]) if ok else "diverged"]
                        + ([pct(r["dev_accuracy"]) if ok else ""] if f.has_dev else [])
                        + [pct(r["metrics"]["accuracy"]) if ok else "", f"{r['wall_seconds'] / 60:.1f}"])
    return rows


def conclusion(f: Facts) -> list[Block]:
    mob, c7 = f.main["mobilenet"], f.main["c7m0"]
    cm, cc = f.cost("mobilenet"), f.cost("c7m0")
    side, _ = standing(f, "c7m0", "mobilenet")
    margin = ("beyond MobileNet-7's seed band" if f.spread("mobilenet", lambda r: r["metrics"]["accuracy"]) else
              "by more than one test image")
    flops, time_ratio = cc["flops"] / cm["flops"], f.epoch_seconds(c7) / f.epoch_seconds(mob)
    gap = abs(digits(f.test("c7m0") - f.test("mobilenet"), f.n_test))
    items = [f"Conv-7, MobileNet-7 with standard convolutions, needs {flops:.1f} times MobileNet-7's FLOPs, and "
             + {"level": "on these runs the ConvDw blocks cost no measurable accuracy.",
                "ahead": f"it scores {gap} more test digits right than MobileNet-7, {margin}: the saving has a price "
                         f"here.",
                "behind": f"MobileNet-7 scores {gap} more test digits right, {margin}.",
                None: "the test and dev digits disagree on which of the two is more accurate."}[side],
             (f"FLOPs are not time: {flops:.1f} times the FLOPs made Conv-7's epochs {time_ratio:.2f} times as long."
              if time_ratio < flops else f"Conv-7's epochs took {time_ratio:.2f} times as long, no less than its "
                                         f"{flops:.1f} times the FLOPs.")]
    losses = {v: f.score(r) for v, r in f.sweep("loss")}
    band = f.baseline_band()
    if {"ce", "balanced-softmax"} <= set(losses):
        gap, counts = losses["balanced-softmax"] - losses["ce"], f.data["train_counts"]
        classes = "imbalanced" if max(counts) / max(min(counts), 1) > 1.5 else "nearly balanced"
        items.append(f"On these {classes} classes, the balanced softmax loss scored {pct(losses['balanced-softmax'])} "
                     f"against {pct(losses['ce'])} for plain cross-entropy ({f.judge}); "
                     + ("the baseline has one seed, so the sweep cannot tell whether that difference is noise."
                        if band is None else
                        "that is more than the width of the baseline's seed band, so correcting the loss for the "
                        "class sizes helped." if gap > band[1] - band[0] else
                        "that is more than the width of the baseline's seed band below it, so correcting the loss "
                        "for the class sizes hurt here." if gap < band[0] - band[1] else
                        "that is within the width of the baseline's seed band, so the sweep cannot tell them apart."))
    items.append(f"What to take away for another assignment: judge choices on digits that are never trained on "
                 f"({'the dev digits here' if f.has_dev else 'the validation set here'}), keep the test set for the "
                 f"end, and measure the noise of a result (its seed band) before calling a difference real.")
    base, recipe = f.baseline(), f.config(mob)
    limits = ([f"The sweeps and the grid run for {plural(base.epochs, 'epoch')} against the recipe's {recipe.epochs}, "
               f"so they rank settings by what they do early in training."] if base.epochs < recipe.epochs else [])
    single = [NAMES[a] for a in MAIN if len(f.recipe_seeds(a)) == 1]
    if "MobileNet-7" in single:
        limits.append(f"{listed(single)} {'was' if len(single) == 1 else 'were'} trained with one seed"
                      f"{' each' * (len(single) > 1)}, so a difference of a few digits between the networks may be "
                      f"seed noise.")
    elif single:
        limits.append(f"{listed(single)} {'was' if len(single) == 1 else 'were'} trained with one seed"
                      f"{' each' * (len(single) > 1)}; {'its' if len(single) == 1 else 'their'} comparisons use "
                      f"MobileNet-7's seeds as the yardstick of noise.")
    return [Block("h1", "8. Conclusion"), Block("bullets", items=items)] + (
        [Block("h2", "Limitations"), Block("bullets", items=limits)] if limits else [])


def report_blocks(res: dict, name: str, roll: str) -> list[Block]:
    """The whole report, its figures and tables numbered in order and every [[fig:KEY]] / [[tab:KEY]] replaced."""
    f = Facts(res)
    blocks = (intro(f, name, roll) + section_conv_vs_mobilenet(f) + section_with_without(f) + section_grid(f)
              + section_confusion(f) + section_predictions(f) + section_filters(f) + section_sweeps(f) + conclusion(f))
    numbers, counts = {}, {"figure": 0, "table": 0}
    for block in blocks:
        if block.kind in counts:
            counts[block.kind] += 1
            numbers[f"[[{block.kind[:3]}:{block.key}]]"] = str(counts[block.kind])

    def fill(text: str) -> str:
        for token, number in numbers.items():
            text = text.replace(token, number)
        return text
    for block in blocks:
        block.text = fill(block.text)
        block.items = [fill(item) for item in block.items] if block.items else block.items
        block.rows = [[fill(str(cell)) for cell in row] for row in block.rows] if block.rows else block.rows
    return blocks
