"""Report.pdf from the stored results alone (``results/``): writing.py says what each section says; this module draws
its figures and lays the pages out with reportlab."""
import io
import re
import time
from pathlib import Path

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
from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from .. import figures as viz
from ..files import atomic_write
from ..student import identity
from ..tools import insight
from .plan import MAIN, SWEEPS
from .facts import NAMES, SETTING_NAMES, Facts, load_results, value_name
from .writing import report_blocks

WIDTH = A4[0] - 4 * cm  # the text width
COLORS = {"mobilenet": "#1f6fb4", "c7m0": "#7a3fb0", "conv4": "#d9731a"}
DIGITS = [str(i) for i in range(10)]
TITLE = "MobileNet v1 blocks on MNIST"


def _make(size) -> Figure:
    return Figure(figsize=size, layout="constrained")


def fig_curves(f: Facts) -> Figure:
    fig = _make((7.5, 3.0))
    for ax, key, what in zip(fig.subplots(1, 2), ("acc", "loss"), ("error (1 − accuracy)", "loss")):
        for arch in MAIN:
            h = f.main[arch]["history"]
            value = (lambda v: 1 - np.array(v)) if key == "acc" else np.array
            ax.plot(h["epoch"], value(h[f"val_{key}"]), "o-", ms=3, color=COLORS[arch], label=f"{NAMES[arch]}")
            ax.plot(h["epoch"], value(h[f"train_{key}"]), "--", color=COLORS[arch], alpha=0.5)
        ax.set(xlabel="epoch", ylabel=what, yscale="log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
    fig.axes[0].legend(title="validation (solid)")
    return fig


def fig_roc(f: Facts) -> Figure:
    fig = _make((7.5, 3.3))
    for ax, arch in zip(fig.subplots(1, 2), ("mobilenet", "c7m0")):
        curves = {k: (np.array(v["fpr"]), np.array(v["tpr"]), v["auc"]) for k, v in f.res["main"][arch]["roc"].items()}
        insight.draw_roc(ax, curves, f.n_test, f"{NAMES[arch]}: macro AUC "
                                               f"{f.main[arch]['metrics']['roc_auc_macro']:.5f}")
    return fig


def fig_tsne(f: Facts) -> Figure:
    fig = _make((7.5, 3.7))
    for ax, arch in zip(fig.subplots(1, 2), ("mobilenet", "c7m0")):
        a, knn = f.res["arrays"][arch], f.res["main"][arch].get("knn")
        insight.draw_tsne(ax, a["tsne_points"], a["tsne_truth"], a["tsne_guess"], DIGITS, legend=False)
        ax.set_title(NAMES[arch] + (f": 5-nearest-neighbour accuracy {knn:.2%}" if knn is not None else ""))
    return fig


def fig_confusion(f: Facts) -> Figure:
    fig = _make((7.5, 2.8))
    for ax, arch in zip(fig.subplots(1, 3), MAIN):
        cm_ = np.array(f.main[arch]["metrics"]["confusion_matrix"])
        off = np.where(np.eye(len(cm_), dtype=bool), np.nan, cm_)
        ax.imshow(np.where(np.eye(len(cm_), dtype=bool), 1.0, np.nan), cmap="Greys", vmin=0, vmax=5)
        ax.imshow(off, cmap="Reds", vmin=0, vmax=max(1, np.nanmax(off)))
        for (i, j), v in np.ndenumerate(cm_):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=5.2 if i == j else 6,
                    weight="bold" if i == j else "normal", color="white" if i != j and v > np.nanmax(off) / 2 else "black")
        ax.set_xticks(range(len(cm_)), DIGITS, fontsize=6)
        ax.set_yticks(range(len(cm_)), DIGITS, fontsize=6)
        ax.set(xlabel="predicted", ylabel="true", title=f"{NAMES[arch]}: {int(np.nansum(off))} errors")
    return fig


def fig_grid(f: Facts) -> Figure:
    fig = _make((7.5, 3.1))
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1, 1.2])
    runs = {tuple(map(int, v.split(","))): r for v, r in f.res["groups"].get("grid", []) if r["status"] == "ok"}
    convs, mobiles = sorted({c for c, _ in runs}), sorted({m for _, m in runs})
    table = np.full((len(convs), len(mobiles)), np.nan)
    for (c, m), r in runs.items():
        table[convs.index(c), mobiles.index(m)] = f.score(r)
    shown = ax.imshow(table, cmap="viridis", vmin=np.nanmin(table), vmax=np.nanmax(table))
    for (i, j), v in np.ndenumerate(table):
        blank = "no blocks" if (convs[i], mobiles[j]) == (0, 0) else "not trained"
        ax.text(j, i, blank if v != v else f"{v:.2%}", ha="center", va="center", fontsize=6.5,
                color="0.5" if v != v else "white" if v < np.nanmean(table) else "black")
    ax.set_xticks(range(len(mobiles)), mobiles)
    ax.set_yticks(range(len(convs)), convs)
    ax.set(xlabel="ConvDw blocks", ylabel="conv blocks", title=f.judge)
    fig.colorbar(shown, ax=ax, shrink=0.8)
    for (c, m), r in runs.items():
        flops, error = f.res["costs"][f"c{c}m{m}"]["flops"] / 1e6, 1 - f.score(r)
        ax2.scatter(flops, error, color=COLORS["conv4"] if m == 0 else COLORS["mobilenet"], s=18)
        ax2.annotate(f"{c}+{m}", (flops, error), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax2.set(xscale="log", yscale="log", xlabel="MFLOPs per image", ylabel=f"1 − {f.judge}",
            title="error against cost (orange: no ConvDw block)")
    ax2.grid(alpha=0.3, which="both")
    return fig


def fig_predictions(f: Facts) -> Figure:
    a, m = f.res["arrays"]["mobilenet"], f.main["mobilenet"]["metrics"]
    return viz.plot_predictions(_make, a["shown_images"], a["shown_true"], a["shown_pred"], a["shown_probs"], DIGITS,
                                a["correct"], a["wrong"], round((1 - m["accuracy"]) * m["n"]))


def fig_gradcam(f: Facts) -> Figure:
    a = f.res["arrays"]["mobilenet"]
    rows = [(label, color, idx, a[f"gradcam{k}"].astype(np.float32)) for k, (label, color, idx) in enumerate([
        ("correct: map for the\npredicted (true) digit", viz.CORRECT_COLOR, a["correct"]),
        ("wrong: map for the\npredicted digit", viz.WRONG_COLOR, a["wrong"]),
        ("wrong: map for the\ntrue digit", viz.WRONG_COLOR, a["wrong"])])]
    return insight.plot_gradcam(_make, a["shown_images"], a["shown_true"], a["shown_pred"], a["shown_probs"], DIGITS,
                                rows)


def fig_filters(f: Facts, arch: str) -> Figure:
    a, titles = f.res["arrays"][arch], f.res["main"][arch]["filters"]
    return insight.plot_filters(_make, [(title, kind, a[f"filters{k}"]) for k, (title, kind) in enumerate(titles)])


def fig_sweeps(f: Facts) -> Figure:
    fig, band = _make((7.5, 4.8)), f.baseline_band()
    for ax, group in zip(fig.subplots(2, 3).ravel(), ("lr", "batch", "epochs", "fraction", "loss", "balance")):
        key, points = SWEEPS[group][0], f.sweep(group)
        extra = [(v, s) for v, seeds in f.replicates(group).items() for s in seeds[1:]]
        if band:
            ax.axhspan(band[0], band[1], color="0.85", label="baseline over seeds")
        if key in ("loss", "balance"):
            names = [value_name(key, v).replace(" ", "\n", 1) for v, _ in points]
            ax.bar(range(len(points)), [f.score(r) for _, r in points], color=COLORS["mobilenet"])
            ax.set_xticks(range(len(points)), names, fontsize=6.5)
            where = {v: i for i, (v, _) in enumerate(points)}
            ax.scatter([where[v] for v, _ in extra], [s for _, s in extra], marker="^", color="black", zorder=3)
        else:
            xs = [1.0 if v is None else v for v, _ in points]
            ax.plot(xs, [f.score(r) for _, r in points], "o-", color=COLORS["mobilenet"])
            ax.scatter([1.0 if v is None else v for v, _ in extra], [s for _, s in extra], marker="^", color="black",
                       zorder=3)
            ax.set_xscale("log", base=2 if key == "batch_size" else 10)
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
        scores = [f.score(r) for _, r in points] + [s for _, s in extra] + list(band[:2] if band else [])
        ax.set(title=SETTING_NAMES[key], ylim=(min(scores) - 0.002, max(scores) + 0.002) if scores else None)
        ax.grid(axis="y", alpha=0.3)
    fig.axes[0].set_ylabel(f.judge)
    fig.axes[3].set_ylabel(f.judge)
    return fig


FIGURES = {"curves": fig_curves, "roc": fig_roc, "tsne": fig_tsne, "confusion": fig_confusion, "grid": fig_grid,
           "predictions": fig_predictions, "gradcam": fig_gradcam, "sweeps": fig_sweeps,
           "filters_mobilenet": lambda f: fig_filters(f, "mobilenet"), "filters_conv4": lambda f: fig_filters(f, "conv4")}


def _styles() -> dict[str, ParagraphStyle]:
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"  # DejaVu, as in the figures: ×, −, → and the like
    for name, file in (("Sans", "DejaVuSans.ttf"), ("Sans-Bold", "DejaVuSans-Bold.ttf"),
                       ("Sans-Oblique", "DejaVuSans-Oblique.ttf")):
        pdfmetrics.registerFont(TTFont(name, str(folder / file)))
    pdfmetrics.registerFontFamily("Sans", normal="Sans", bold="Sans-Bold", italic="Sans-Oblique", boldItalic="Sans-Bold")
    base = ParagraphStyle("body", fontName="Sans", fontSize=9.5, leading=13.2, spaceAfter=5)
    return {"p": base, "h1": ParagraphStyle("h1", base, fontName="Sans-Bold", fontSize=13.5, leading=17, spaceBefore=8,
                                            spaceAfter=6, keepWithNext=1),
            "h2": ParagraphStyle("h2", base, fontName="Sans-Bold", fontSize=10.5, leading=14, spaceBefore=4,
                                 keepWithNext=1),
            "title": ParagraphStyle("title", base, fontName="Sans-Bold", fontSize=19, leading=24, spaceAfter=4),
            "caption": ParagraphStyle("caption", base, fontSize=8.2, leading=10.5, textColor=colors.HexColor("#333333")),
            "cell": ParagraphStyle("cell", base, fontSize=7.4, leading=9.2, spaceAfter=0),
            "bullet": ParagraphStyle("bullet", base, leftIndent=12, bulletIndent=2)}


def _inline(text: str) -> str:
    """Escape for reportlab's mini-markup, then **bold**."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)


def _table(rows: list[list[str]], st: dict) -> Table:
    cells = [[Paragraph(_inline(str(c)), st["cell"]) for c in row] for row in rows]
    first = 0.32 if len(rows[0]) == 2 else None
    widths = [WIDTH * first, WIDTH * (1 - first)] if first else None
    table = Table(cells, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(TableStyle([("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                               ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f2f2f2")]),
                               ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5)]))
    return table


def _image(fig: Figure, share: float = 1.0) -> Image:
    """A figure as a picture ``share`` of the text width at most."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=200, facecolor="white")
    width, height = fig.get_size_inches()
    scale = min(1.0, share * WIDTH / (width * 72))
    buffer.seek(0)
    return Image(buffer, width=width * 72 * scale, height=height * 72 * scale)


def story(f: Facts, name: str, roll: str, st: dict) -> list:
    flow, numbers = [], {"figure": 0, "table": 0}
    for block in report_blocks(f.res, name, roll):
        if block.kind in ("h1", "h2", "p"):
            flow.append(Paragraph(_inline(block.text), st[block.kind]))
        elif block.kind == "bullets":
            flow += [Paragraph(_inline(item), st["bullet"], bulletText="•") for item in block.items]
        else:
            numbers[block.kind] += 1
            label = Paragraph(f"<b>{block.kind.title()} {numbers[block.kind]}.</b> {_inline(block.text)}",
                              st["caption"])
            if block.kind == "figure":
                with matplotlib.rc_context(viz.STYLE):
                    parts = [_image(FIGURES[block.key](f), block.width), Spacer(1, 3), label]
            else:
                parts = [label, Spacer(1, 3), _table(block.rows, st)]
            long_table = block.kind == "table" and len(block.rows) > 18  # may run onto the next page
            flow += (parts if long_table else [KeepTogether(parts)]) + [Spacer(1, 8)]
    return flow


def build_pdf(results: Path, pdf: Path, name: str | None = None, roll: str | None = None,
              date: str | None = None) -> int:
    """Write Report.pdf from ``results``; returns its page count."""
    who = identity()
    name, roll, date = name or who["name"], roll or who["roll_number"], date or time.strftime("%d %B %Y")
    f, st = Facts(load_results(Path(results))), _styles()
    flow = [Paragraph(TITLE, st["title"]),
            Paragraph(f"Deep Learning, Assignment 3: Classification of MNIST using PyTorch<br/><b>{_inline(name)}</b>, "
                      f"roll number <b>{_inline(roll)}</b> · {_inline(date)}", st["p"]), Spacer(1, 6)]
    flow += story(f, name, roll, st)
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

    buffer = io.BytesIO()
    doc = Doc(buffer, pagesize=A4, leftMargin=2 * cm, rightMargin=2 * cm, topMargin=1.8 * cm, bottomMargin=1.9 * cm,
              title=TITLE, author=f"{name} ({roll})", subject="Deep Learning, Assignment 3", creator="mobilenet_lab")
    doc.build(flow, onFirstPage=footer, onLaterPages=footer)
    atomic_write(pdf, buffer.getvalue())
    return doc.page
