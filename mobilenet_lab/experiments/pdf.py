"""Report.pdf from the stored runs of ``mobilenet_lab.report``: figures, tables and text.

Every number in the text is read from the runs' ``result.json`` files (or computed from their
stored ``model.pt`` on the test set); nothing is typed in by hand. The figures come from
``figures.py`` (the visualize step's per-figure functions) and, for the comparisons across
runs, from the small plotting functions here. The layout is reportlab's platypus: numbered
sections with a table of contents and PDF bookmarks, captioned figures and tables.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from xml.sax.saxutils import escape

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from reportlab.platypus import Flowable

from . import figures as viz
from .errors import UserError
from .recipe import DEFAULTS, OPTIMIZER_NAMES
from .report import GROUP_TITLES, Outcome, duration

SECTIONS = [
    "1. Conv blocks against MobileNet blocks",
    "2. Number of conv blocks and MobileNet blocks",
    "3. Confusion matrices, recall and accuracy on the test set",
    "4. Correct and wrong predictions",
    "5. Learned filters of the last convolution layer",
    "6. With and without MobileNet blocks",
    "7. Loss function, batch size, learning rate, epochs and data ratio",
    "8. Depthwise-separable against standard convolution",
    "9. Class imbalance",
    "10. Conclusion",
]
DPI = 150
STYLE = dict(viz.STYLE, **{"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "figure.titlesize": 13,
                           "legend.fontsize": 9.5, "xtick.labelsize": 10, "ytick.labelsize": 10})
# t-SNE maps are set two to a row: larger type, so that it stays legible at half the page width
TSNE_STYLE = dict(STYLE, **{"font.size": 17, "axes.labelsize": 17, "figure.titlesize": 15.5, "legend.fontsize": 16,
                            "legend.title_fontsize": 16})
MOBILE_COLOR, CONV_COLOR = "#1f6fb4", "#d9731a"
NEAR_BEST = 0.005    # Section 2: "as good as the best" = within this accuracy (or the seed spread, if larger)
CONFIDENT = 0.9      # "confident" predictions in Section 4: softmax probability above this
LOSS_NAMES = {"ce": "cross-entropy", "weighted-ce": "class-weighted cross-entropy", "balanced-softmax": "balanced softmax",
              "label-smoothing": "label-smoothing", "focal": "focal"}
BALANCE_LABELS = {"none": "none", "weighted-loss": "weighted loss", "sampler": "balanced sampler",
                  "balanced-softmax": "balanced softmax"}
MIN_FIGURE_SCALE = 0.72  # a figure shrinks down to this to fill the rest of a page
SILHOUETTE_DIMS = 50  # Section 6: features are reduced by PCA to this many dimensions, as figures.plot_tsne does
EDGE_SHARE = 0.25    # Section 5: a kernel is edge-like when |sum of weights| < this share of sum |weights|
ELASTIC_SETUP = "; the main models' images are also bent by a smooth random elastic field (see Training)"


def augmentation_phrase(spec: dict) -> str:
    """The shear, elastic distortion and erasing a run's augmentation added, as a phrase to follow
    "trained with ... loss"."""
    pixels = spec.get("elastic") or 0
    on = pixels and spec.get("augment", True)
    erase = (spec.get("erase") or 0) if spec.get("augment", True) else 0
    shear = (spec.get("shear") or 0) if spec.get("augment", True) else 0
    box = ""
    if erase:
        from .training import ERASE_AREA  # imported here: the phrase is rare and training loads torch
        box = (f", a random box of {ERASE_AREA[0]:.0%}-{ERASE_AREA[1]:.0%} of the image blanked in {erase:.0%} "
               f"of the training images")
    return ((f", random shear of up to {shear:g} degrees" if shear else "")
            + (f", elastic distortion of up to {pixels:g} pixels added to the augmentation" if on else "") + box)


def averaging(spec: dict) -> str:
    """How a run averaged its weights, as a phrase to follow "trained with ... loss"."""
    decay = spec.get("average_decay") or 0
    return (f" and an exponential moving average of the weights (decay up to {decay:g}, warming up as "
            f"(1+n)/(10+n) after n steps), which validation and the "
            f"test use; after training, the batch-norm statistics of the kept weights are measured afresh on "
            f"the training images" if decay else "")


# Which weights the runs test (train(keep=...)), as a clause of the setup text.
KEPT_TEXT = {"last": "the weights tested are those of the last epoch (with the one-cycle schedule and the weight "
                     "average the intended result: on a few hundred validation images the best epoch is mostly "
                     "chance), and tables give the best validation epoch too",
             "best": "it picks the best epoch (the highest accuracy, the latest among equals), whose weights are "
                     "the ones tested"}


# ---------------------------------------------------------------------------------------------
# Number formats (every number in the text goes through one of these).
# ---------------------------------------------------------------------------------------------
def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def pp(x: float) -> str:
    """A difference of two fractions in percentage points, signed."""
    return f"{100 * x:+.2f} pp"


def num(n: float) -> str:
    return f"{n:,.0f}"


def mflops(f: float) -> str:
    return f"{f / 1e6:.2f} MFLOPs"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def ms(x: float) -> str:
    return f"{x:.3f} ms" if x < 1 else f"{x:.2f} ms"


def secs(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else duration(s)


def value_label(group: str, value) -> str:
    if group == "lr":
        return f"{value:g}"
    if group == "fraction":
        return f"{value:g}"
    if group == "grid":
        return f"{value[0]} conv + {value[1]} MobileNet"
    return str(value)


# ---------------------------------------------------------------------------------------------
# The stored results, seen by group.
# ---------------------------------------------------------------------------------------------
class Results:
    """Stored results by run name and by (group, value), with the main models loaded."""

    def __init__(self, outcome: Outcome, data, out: Path, tsne_samples: int):
        from .checkpoint import load
        from .training import evaluate

        self.plan, self.results, self.data, self.out = outcome.plan, outcome.results, data, Path(out)
        self.tsne_samples = tsne_samples
        for name in (self.plan.member("main", "mobilenet"), self.plan.member("main", "conv4"),
                     self.plan.member("balance", "none")):
            if self.results[name]["status"] != "ok":
                raise UserError(f"run {name} {self.results[name]['status']}: the report needs it; "
                                f"delete {name}'s folder and run again with another --epochs-main or seed")
        self.splits = data.splits(1.0)
        self.names = self.splits.class_names
        self.main = {}
        for arch in ("mobilenet", "conv4"):
            name = self.plan.member("main", arch)
            net = load(self.run_dir(name) / "model.pt", device="cpu")
            pred = evaluate(net, self.splits.test_x, self.splits.test_y)
            stored = self.results[name]["metrics"]["accuracy"]
            if abs(pred.accuracy - stored) > 0.5 / len(self.splits.test_y):  # one image's difference
                raise UserError(f"{name}/model.pt gives test accuracy {pred.accuracy:.4f}, not the stored "
                                f"{stored:.4f}: the dataset changed since the run; use the dataset it was run on")
            self.main[arch] = {"net": net, "pred": pred, "result": self.results[name], "name": name}

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name

    def r(self, group: str, value) -> dict:
        return self.results[self.plan.member(group, value)]

    def group(self, group: str) -> list[tuple[object, dict]]:
        return [(v, self.results[n]) for v, n in self.plan.groups[group]]

    def ok(self, group: str) -> list[tuple[object, dict]]:
        return [(v, r) for v, r in self.group(group) if r["status"] == "ok"]

    def time_of(self, names) -> float:
        return sum(self.results[n].get("wall_seconds", 0.0) for n in set(names))

    def group_time(self, *groups: str) -> float:
        return self.time_of([n for g in groups for _, n in self.plan.groups[g]])

    @property
    def machine(self) -> dict:
        return self.main["mobilenet"]["result"]["machine"]

    def seed_spread(self) -> float:
        accs = [r["metrics"]["accuracy"] for _, r in self.ok("seed")]
        return max(accs) - min(accs) if len(accs) > 1 else 0.0


# ---------------------------------------------------------------------------------------------
# The document: styles, numbering, flowables.
# ---------------------------------------------------------------------------------------------
def _register_fonts() -> dict[str, str]:
    """DejaVu (shipped with matplotlib, as in the figures): full Unicode for ×, →, subscripts."""
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = {"Serif": ("DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic"),
             "Sans": ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique")}
    for family, files in faces.items():
        names = [f"DV{family}", f"DV{family}-Bold", f"DV{family}-Italic", f"DV{family}-BoldItalic"]
        for name, file in zip(names, files):
            if name not in pdfmetrics.getRegisteredFontNames():
                pdfmetrics.registerFont(TTFont(name, str(folder / f"{file}.ttf")))
        addMapping(names[0], 0, 0, names[0])
        addMapping(names[0], 1, 0, names[1])
        addMapping(names[0], 0, 1, names[2])
        addMapping(names[0], 1, 1, names[3])
    return {"serif": "DVSerif", "sans": "DVSans"}


class Doc:
    """Styles, figure and table numbering, and the flowables the sections are made of."""

    def __init__(self, fig_dir: Path):
        from reportlab.lib import colors
        from reportlab.lib.enums import TA_CENTER, TA_JUSTIFY, TA_LEFT
        from reportlab.lib.styles import ParagraphStyle
        from reportlab.lib.units import cm

        fonts = _register_fonts()
        serif, sans = fonts["serif"], fonts["sans"]
        self.cm, self.colors = cm, colors
        self.width = 21.0 * cm - 2 * 2.0 * cm
        self.frame_height = 29.7 * cm - 2 * 2.0 * cm
        self.fig_dir = fig_dir
        fig_dir.mkdir(parents=True, exist_ok=True)
        self.figure_no = self.table_no = 0
        self.render_seconds = 0.0
        dark = colors.HexColor("#1b3a5c")
        self.s = {
            "body": ParagraphStyle("body", fontName=serif, fontSize=9.6, leading=13.6, alignment=TA_JUSTIFY,
                                   spaceAfter=6),
            "bullet": ParagraphStyle("bullet", fontName=serif, fontSize=9.6, leading=13.6, alignment=TA_JUSTIFY,
                                     leftIndent=14, bulletIndent=4, spaceAfter=4),
            "h1": ParagraphStyle("h1", fontName=f"{sans}-Bold", fontSize=15, leading=19, textColor=dark,
                                 spaceBefore=6, spaceAfter=8),
            "h2": ParagraphStyle("h2", fontName=f"{sans}-Bold", fontSize=11, leading=14, textColor=dark,
                                 spaceBefore=8, spaceAfter=4),
            "caption": ParagraphStyle("caption", fontName=sans, fontSize=8, leading=10.5, alignment=TA_JUSTIFY,
                                      textColor=colors.HexColor("#333333"), spaceBefore=3, spaceAfter=10),
            "tcaption": ParagraphStyle("tcaption", fontName=sans, fontSize=8, leading=10.5, alignment=TA_LEFT,
                                       textColor=colors.HexColor("#333333"), spaceBefore=6, spaceAfter=3),
            "cell": ParagraphStyle("cell", fontName=sans, fontSize=7.4, leading=9),
            "cellr": ParagraphStyle("cellr", fontName=sans, fontSize=7.4, leading=9, alignment=2),
            "head": ParagraphStyle("head", fontName=f"{sans}-Bold", fontSize=7.4, leading=9,
                                   textColor=colors.white),
            "headr": ParagraphStyle("headr", fontName=f"{sans}-Bold", fontSize=7.4, leading=9, alignment=2,
                                    textColor=colors.white),
            "headc": ParagraphStyle("headc", fontName=f"{sans}-Bold", fontSize=7.4, leading=9, alignment=TA_CENTER,
                                    textColor=colors.white),
            "setup": ParagraphStyle("setup", fontName=sans, fontSize=8, leading=11, alignment=TA_JUSTIFY),
            "title": ParagraphStyle("title", fontName=f"{sans}-Bold", fontSize=22, leading=28, alignment=TA_CENTER,
                                    textColor=dark, spaceAfter=10),
            "subtitle": ParagraphStyle("subtitle", fontName=sans, fontSize=12.5, leading=17, alignment=TA_CENTER,
                                       textColor=colors.HexColor("#444444"), spaceAfter=4),
            "author": ParagraphStyle("author", fontName=serif, fontSize=12, leading=17, alignment=TA_CENTER),
            "warn": ParagraphStyle("warn", fontName=f"{sans}-Bold", fontSize=9.5, leading=13, alignment=TA_CENTER,
                                   textColor=colors.HexColor("#9a1b1b")),
            "toc1": ParagraphStyle("toc1", fontName=sans, fontSize=10, leading=15, leftIndent=10),
            "toc2": ParagraphStyle("toc2", fontName=sans, fontSize=8.8, leading=12, leftIndent=26,
                                   textColor=colors.HexColor("#444444")),
        }

    # text -----------------------------------------------------------------------------------
    def p(self, text: str, style: str = "body"):
        from reportlab.platypus import Paragraph
        return Paragraph(text, self.s[style])

    def bullets(self, items: list[str]) -> list:
        return [self.p(item, "bullet") for item in items]

    def heading(self, text: str, level: int = 0):
        para = self.p(escape(text), "h1" if level == 0 else "h2")
        para.toc_level = level
        return para

    def setup(self, text: str):
        """The shaded 'Setup' box that opens every section."""
        from reportlab.platypus import Table, TableStyle
        t = Table([[self.p(f"<b>Setup.</b> {text}", "setup")]], colWidths=[self.width])
        t.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), self.colors.HexColor("#eef3f8")),
                               ("LINEBEFORE", (0, 0), (0, -1), 2.5, self.colors.HexColor("#1b3a5c")),
                               ("LEFTPADDING", (0, 0), (-1, -1), 8), ("RIGHTPADDING", (0, 0), (-1, -1), 8),
                               ("TOPPADDING", (0, 0), (-1, -1), 5), ("BOTTOMPADDING", (0, 0), (-1, -1), 6)]))
        t.spaceAfter = 8
        return t

    # tables ---------------------------------------------------------------------------------
    def next_table(self) -> int:
        self.table_no += 1
        return self.table_no

    def table(self, number: int, caption: str, header: list[str], rows: list[list], widths: list[float] | None = None,
              bold_rows: tuple[int, ...] = (), left_cols: int = 1, groups: list[tuple[str, int]] | None = None):
        """A captioned table (caption above): a dark header row, zebra rows, numbers right-aligned.

        Header cells may hold paragraph markup (sub/superscripts); ``groups`` adds a row above the
        header whose cells span columns: (label, number of columns) from the left."""
        from reportlab.platypus import KeepTogether, Table, TableStyle
        cells = [[self.p(str(h), "head" if j < left_cols else "headr") for j, h in enumerate(header)]]
        style = []
        if groups:
            top, col = [], 0
            for label, span in groups:
                top += [self.p(f"<b>{label}</b>", "headc")] + [""] * (span - 1)
                if span > 1:
                    style.append(("SPAN", (col, 0), (col + span - 1, 0)))
                if label:
                    style.append(("LINEBELOW", (col, 0), (col + span - 1, 0), 0.5, self.colors.white))
                col += span
            cells.insert(0, top)
        n_head = len(cells)
        for r in rows:
            cells.append([self.p(str(c), "cell" if j < left_cols else "cellr") for j, c in enumerate(r)])
        col_widths = [w * self.width for w in widths] if widths else None
        t = Table(cells, colWidths=col_widths, repeatRows=n_head, hAlign="LEFT")
        style += [("BACKGROUND", (0, 0), (-1, n_head - 1), self.colors.HexColor("#1b3a5c")),
                  ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                  ("LINEBELOW", (0, -1), (-1, -1), 0.6, self.colors.HexColor("#1b3a5c")),
                  ("TOPPADDING", (0, 0), (-1, -1), 2.2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2.2),
                  ("LEFTPADDING", (0, 0), (-1, -1), 4), ("RIGHTPADDING", (0, 0), (-1, -1), 4)]
        for i in range(n_head, len(cells)):
            if (i - n_head) % 2 == 1:
                style.append(("BACKGROUND", (0, i), (-1, i), self.colors.HexColor("#f1f4f8")))
        for i in bold_rows:
            style.append(("LINEABOVE", (0, i + n_head), (-1, i + n_head), 0.5, self.colors.HexColor("#1b3a5c")))
        t.setStyle(TableStyle(style))
        head = self.p(f"<b>Table {number}.</b> {caption}", "tcaption")
        if len(rows) > 30:
            return [head, t, self.spacer(8)]
        return [KeepTogether([head, t]), self.spacer(8)]

    def kv_table(self, number: int, caption: str, rows: list[tuple[str, str]], key_width: float = 0.2):
        """A captioned two-column table of labels and values, without a header row."""
        from reportlab.platypus import KeepTogether, Table, TableStyle
        cells = [[self.p(f"<b>{k}</b>", "cell"), self.p(v, "cell")] for k, v in rows]
        t = Table(cells, colWidths=[key_width * self.width, (1 - key_width) * self.width], hAlign="LEFT")
        style = [("LINEABOVE", (0, 0), (-1, 0), 0.8, self.colors.HexColor("#1b3a5c")),
                 ("LINEBELOW", (0, -1), (-1, -1), 0.8, self.colors.HexColor("#1b3a5c")),
                 ("VALIGN", (0, 0), (-1, -1), "TOP"),
                 ("TOPPADDING", (0, 0), (-1, -1), 2.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5)]
        style += [("BACKGROUND", (0, i), (-1, i), self.colors.HexColor("#f1f4f8")) for i in range(0, len(rows), 2)]
        t.setStyle(TableStyle(style))
        return [KeepTogether([self.p(f"<b>Table {number}.</b> {caption}", "tcaption"), t]), self.spacer(8)]

    def spacer(self, h: float):
        from reportlab.platypus import Spacer
        return Spacer(1, h)

    # figures --------------------------------------------------------------------------------
    def next_figure(self) -> int:
        self.figure_no += 1
        return self.figure_no

    def render(self, name: str, draw, style: dict | None = None) -> Path:
        """Draw a figure with ``draw(make)`` (make: size -> empty Figure) and save it as a PNG."""
        started = time.perf_counter()
        with matplotlib.rc_context(style or STYLE):
            fig = draw(lambda size: Figure(figsize=size, layout="constrained"))
            path = self.fig_dir / f"{name}.png"
            fig.savefig(path, dpi=DPI, facecolor="white")
        self.render_seconds += time.perf_counter() - started
        return path

    def image(self, path: Path, max_width: float, max_height: float):
        from PIL import Image as PILImage
        from reportlab.platypus import Image
        with PILImage.open(path) as img:
            w, h = img.size
        scale = min(max_width / w, max_height / h)
        return Image(str(path), width=w * scale, height=h * scale)

    def figure(self, number: int, paths: list[Path] | Path, caption: str, width: float = 1.0,
               max_height: float = 0.62, columns: int = 1, labels: list[str] | None = None,
               min_scale: float = MIN_FIGURE_SCALE):
        """One captioned figure: its images stacked (or ``columns`` to a row), labelled (a), (b), ...
        when there are several, and its caption below. It shrinks (down to MIN_FIGURE_SCALE) to
        fit the rest of a page rather than leave a gap."""
        from PIL import Image as PILImage
        paths = [paths] if isinstance(paths, Path) else paths
        labels = labels or ([f"({chr(97 + i)})" for i in range(len(paths))] if len(paths) > 1 else [""])
        col_w = self.width * width / columns
        max_h = self.frame_height * max_height / (1 if columns > 1 else len(paths))
        images = []
        for path, label in zip(paths, labels):
            with PILImage.open(path) as img:
                w, h = img.size
            scale = min((col_w - 6) / w, max_h / h)
            images.append((str(path), label, w * scale, h * scale))
        return FigureBlock(images, self.p(f"<b>Figure {number}.</b> {caption}", "caption"), columns,
                           self.width, min_scale)


class FigureBlock(Flowable):
    """Images in rows (each optionally labelled) above a caption paragraph. Never split; shrinks
    down to MIN_FIGURE_SCALE of its size to fit the rest of a page."""

    LABEL_H = 10.0

    def __init__(self, images: list[tuple[str, str, float, float]], caption, columns: int, width: float,
                 min_scale: float = MIN_FIGURE_SCALE):
        super().__init__()
        self.min_scale = min_scale
        self.images, self.caption, self.columns, self.full_width = images, caption, columns, width
        self.rows = [images[i:i + columns] for i in range(0, len(images), columns)]
        self.label_h = self.LABEL_H if any(label for _, label, _, _ in images) else 0.0
        self.image_h = sum(max(h for *_, h in row) for row in self.rows)
        self.scale, self.cap_h = 1.0, 0.0
        self.spaceBefore, self.spaceAfter = 2, 8

    def _fixed_h(self) -> float:
        return self.label_h * len(self.rows) + self.cap_h + 3

    def wrap(self, avail_width, avail_height):
        self.cap_h = self.caption.wrap(self.full_width, avail_height)[1]
        room = avail_height - self._fixed_h()
        if self.image_h <= room:
            self.scale = 1.0
        elif room >= self.min_scale * self.image_h:
            self.scale = room / self.image_h
        else:
            self.scale = 1.0  # does not fit: the frame moves it to the next page
        self.width, self.height = self.full_width, self.image_h * self.scale + self._fixed_h()
        return self.width, self.height

    def split(self, avail_width, avail_height):
        return []

    def draw(self):
        canvas, top = self.canv, self.height
        col_w = self.full_width / self.columns
        for row in self.rows:
            row_h = self.label_h + max(h for *_, h in row) * self.scale
            for j, (path, label, w, h) in enumerate(row):
                if label:
                    canvas.setFont("DVSans-Bold", 7.6)
                    canvas.drawString(j * col_w + 2, top - 8, label)
                canvas.drawImage(path, j * col_w + (col_w - w * self.scale) / 2, top - self.label_h - h * self.scale,
                                 w * self.scale, h * self.scale)
            top -= row_h
        self.caption.drawOn(canvas, 0, 0)


def _doc_template(path: Path, footer: str):
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import cm
    from reportlab.platypus import (  # noqa: F401
        BaseDocTemplate,
        Frame,
        NextPageTemplate,
        PageTemplate,
        Paragraph,
    )

    class ReportDoc(BaseDocTemplate):
        def __init__(self, filename: str):
            super().__init__(filename, pagesize=A4, leftMargin=2 * cm, rightMargin=2 * cm, topMargin=2 * cm,
                             bottomMargin=2 * cm, title="Report: MobileNet v1 blocks on imbalanced MNIST",
                             author=footer.split("  ·  ")[0])
            frame = Frame(self.leftMargin, self.bottomMargin, self.width, self.height, id="body",
                          leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0)
            self.addPageTemplates([PageTemplate("title", [frame], onPage=self._plain),
                                   PageTemplate("body", [frame], onPage=self._decorated)])

        def _plain(self, canvas, doc):
            pass

        def _decorated(self, canvas, doc):
            canvas.saveState()
            canvas.setFont("DVSans", 7.5)
            canvas.setFillGray(0.35)
            canvas.drawString(2 * cm, 1.2 * cm, footer)
            canvas.drawRightString(A4[0] - 2 * cm, 1.2 * cm, f"page {doc.page}")
            canvas.setStrokeGray(0.75)
            canvas.line(2 * cm, 1.55 * cm, A4[0] - 2 * cm, 1.55 * cm)
            canvas.restoreState()

        def afterFlowable(self, flowable):
            level = getattr(flowable, "toc_level", None)
            if level is None:
                return
            text = flowable.getPlainText()
            key = "h%08x" % (hash(text) & 0xFFFFFFFF)
            self.canv.bookmarkPage(key)
            self.canv.addOutlineEntry(text, key, level=level, closed=level > 0)
            self.notify("TOCEntry", (level, text, self.page, key))

    return ReportDoc(str(path))


# ---------------------------------------------------------------------------------------------
# Figures drawn here (comparisons across runs); the single-model figures are figures.py's.
# ---------------------------------------------------------------------------------------------
def plot_grid(make, rows: list[dict], convs: list[int], mobiles: list[int]) -> Figure:
    """Test accuracy over the grid of block counts, and accuracy against FLOPs."""
    import seaborn as sns
    fig = make((13, 5.0))
    ax_heat, ax_scatter = fig.subplots(1, 2, width_ratios=[1, 1.25])
    acc = np.full((len(convs), len(mobiles)), np.nan)
    for r in rows:
        if r["acc"] is not None:
            acc[convs.index(r["conv"]), mobiles.index(r["mob"])] = 100 * r["acc"]
    sns.heatmap(acc, ax=ax_heat, annot=True, fmt=".2f", cmap="viridis", xticklabels=mobiles, yticklabels=convs,
                cbar_kws={"label": "test accuracy (%)", "shrink": 0.85}, linewidths=0.5, linecolor="white",
                annot_kws={"fontsize": 10})
    ax_heat.set_xlabel("MobileNet (ConvDw) blocks")
    ax_heat.set_ylabel("conv blocks")
    ax_heat.tick_params(axis="y", rotation=0)
    ax_heat.set_title("Test accuracy (%); blank: not run")
    colors = {c: f"C{i}" for i, c in enumerate(convs)}
    for r in rows:
        if r["acc"] is None:
            continue
        ax_scatter.scatter(r["flops"] / 1e6, 100 * r["acc"], s=30 + r["params"] / 800, color=colors[r["conv"]],
                           alpha=0.8, edgecolors="black", linewidths=0.5)
        ax_scatter.annotate(f"{r['conv']}c+{r['mob']}m", (r["flops"] / 1e6, 100 * r["acc"]), fontsize=8.5,
                            xytext=(5, 4), textcoords="offset points")
    for c in convs:
        ax_scatter.scatter([], [], color=colors[c], label=f"{c} conv block{'s' * (c != 1)}")
    ax_scatter.set_xscale("log")
    ax_scatter.set_xlabel("FLOPs per image (millions, log scale)")
    ax_scatter.set_ylabel("test accuracy (%)")
    ax_scatter.grid(alpha=0.3)
    ax_scatter.legend(title="marker area ∝ parameters", loc="lower right")
    ax_scatter.set_title("Accuracy against cost (labels: conv c + MobileNet m)")
    return fig


def plot_sweeps(make, panels: list[tuple[str, str, list, list, list, bool]]) -> Figure:
    """Small multiples: test accuracy and macro F1 against each swept setting.

    ``panels``: (title, x label, x values, accuracies, macro F1s, categorical) per panel.
    """
    fig = make((13, 7.6))
    axes = fig.subplots(2, 3).ravel()
    for ax, (title, xlabel, xs, accs, f1s, categorical) in zip(axes, panels):
        pos = np.arange(len(xs)) if categorical else np.asarray(xs, dtype=float)
        a = np.array([np.nan if v is None else 100 * v for v in accs])
        f = np.array([np.nan if v is None else 100 * v for v in f1s])
        if categorical:
            ax.bar(pos - 0.2, a, 0.4, label="accuracy", color="C0")
            ax.bar(pos + 0.2, f, 0.4, label="macro F1", color="C2")
            long = max(len(str(x)) for x in xs) > 6
            ax.set_xticks(pos, [str(x) for x in xs], rotation=25 if long else 0, ha="right" if long else "center")
            low = np.nanmin(np.concatenate([a, f]))
            ax.set_ylim(max(0, low - 0.6 * (100 - low) - 1), 100)
        else:
            ax.plot(pos, a, "o-", label="accuracy", color="C0")
            ax.plot(pos, f, "s--", label="macro F1", color="C2")
            if xlabel.startswith(("learning", "batch")):
                ax.set_xscale("log")
                ax.set_xticks(pos, [f"{x:g}" for x in xs])
                ax.minorticks_off()
        for x, v in zip(pos, a):
            if np.isnan(v):
                ax.annotate("diverged", (x, ax.get_ylim()[0]), ha="center", va="bottom", color="C3", fontsize=8)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("% on the test set")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    return fig


def plot_sweep_curves(make, lr_runs: list[tuple[str, dict]], epoch_runs: list[tuple[str, dict]]) -> Figure:
    """Validation accuracy per epoch for each learning rate, and for each epoch budget."""
    fig = make((13, 4.6))
    for ax, runs, title in zip(fig.subplots(1, 2), (lr_runs, epoch_runs),
                               ("Learning rate sweep", "Epoch budget sweep (one-cycle schedule per budget)")):
        cmap = matplotlib.colormaps["viridis"]
        for i, (label, h) in enumerate(runs):
            color = cmap(i / max(1, len(runs) - 1))
            ax.plot(h["epoch"], [100 * v for v in h["val_acc"]], "o-", color=color, label=label, ms=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8.5)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return fig


def plot_overlay(make, histories: dict[str, dict]) -> Figure:
    """Training and validation loss and accuracy of the two main models on shared axes."""
    fig = make((13, 4.6))
    colors = {"mobilenet": MOBILE_COLOR, "conv4": CONV_COLOR}
    for ax, key, what in zip(fig.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy")):
        for arch, h in histories.items():
            ax.plot(h["epoch"], h[f"train_{key}"], "--", color=colors[arch], label=f"{arch} training", alpha=0.8)
            ax.plot(h["epoch"], h[f"val_{key}"], "o-", color=colors[arch], label=f"{arch} validation", ms=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.set_title(f"{what.capitalize()} per epoch, both models")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8.5)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if key == "loss":
            ax.set_yscale("log")
    return fig


def plot_confusion_pair(make, matrices: dict[str, list[list[int]]], names: list[str]) -> Figure:
    """Row-normalised confusion matrices of the two main models side by side, on one colour scale."""
    import seaborn as sns
    fig = make((11, 4.9))
    for ax, (arch, cm) in zip(fig.subplots(1, 2), matrices.items()):
        cm = np.asarray(cm, dtype=float)
        rows = cm.sum(1, keepdims=True)
        norm = np.divide(cm, rows, out=np.full(cm.shape, np.nan), where=rows > 0)
        sns.heatmap(norm, ax=ax, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, square=True,
                    xticklabels=names, yticklabels=names, annot_kws={"fontsize": 8}, linewidths=0.4,
                    linecolor="white", cbar_kws={"shrink": 0.8, "label": "share of the true class"})
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.tick_params(axis="y", rotation=0)
        ax.set_title(f"{arch}: diagonal = recall")
    return fig


def plot_block_costs(make, blocks: list[dict]) -> Figure:
    """Per ConvDw block: FLOPs against a standard convolution, and measured ratios against the formula."""
    fig = make((13, 4.8))
    ax_f, ax_r = fig.subplots(1, 2)
    x = np.arange(len(blocks))
    labels = [b["label"] for b in blocks]
    ax_f.bar(x - 0.2, [b["standard_flops"] / 1e6 for b in blocks], 0.4, label="standard 3×3 conv", color="0.55")
    ax_f.bar(x + 0.2, [b["flops"] / 1e6 for b in blocks], 0.4, label="depthwise-separable (ConvDw)",
             color=MOBILE_COLOR)
    ax_f.set_xticks(x, labels, fontsize=8.5)
    ax_f.set_ylabel("MFLOPs per image")
    ax_f.set_title("FLOPs of each block (torch.utils.flop_counter)")
    ax_f.legend()
    ax_f.grid(axis="y", alpha=0.3)
    ax_r.plot(x, [b["formula"] for b in blocks], "-", color="black", label="1/N + 1/Dk²", lw=2)
    ax_r.plot(x, [b["ratio"] for b in blocks], "o", color=MOBILE_COLOR, ms=9, label="measured FLOPs ratio")
    if all(b.get("time_ratio") for b in blocks):
        ax_r.plot(x, [b["time_ratio"] for b in blocks], "s", color=CONV_COLOR, ms=7,
                  label="measured CPU time ratio")
    ax_r.set_xticks(x, labels, fontsize=8.5)
    ax_r.set_ylabel("separable / standard")
    ax_r.set_ylim(0, max(1.05, max((b.get("time_ratio") or 0) for b in blocks) * 1.1))
    ax_r.axhline(1, ls=":", color="gray")
    ax_r.set_title("Cost ratio per block")
    ax_r.legend()
    ax_r.grid(alpha=0.3)
    return fig


def plot_imbalance(make, counts: list[int], names: list[str], recalls: dict[str, list[float]]) -> Figure:
    """Training images per class, and recall per class under each imbalance handling (classes
    ordered from the most to the least frequent)."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    fig = make((13, 4.6))
    ax_c, ax_r = fig.subplots(1, 2, width_ratios=[1, 1.6])
    bars = ax_c.bar(range(len(order)), [counts[i] for i in order], color="0.55")
    ax_c.bar_label(bars, labels=[f"{counts[i]:,}" for i in order], fontsize=7.5, padding=2, rotation=90)
    ax_c.set_xticks(range(len(order)), [names[i] for i in order])
    ax_c.set_xlabel("class (most to least frequent)")
    ax_c.set_ylabel("training images")
    ax_c.margins(y=0.2)
    ax_c.set_title("Training images per class")
    width = 0.8 / len(recalls)
    lows = []
    for j, (label, rec) in enumerate(recalls.items()):
        values = [100 * rec[i] for i in order]
        lows.append(min(values))
        ax_r.bar(np.arange(len(order)) + (j - (len(recalls) - 1) / 2) * width, values, width, label=label,
                 color=f"C{j}")
    ax_r.set_xticks(range(len(order)), [names[i] for i in order])
    ax_r.set_xlabel("class (most to least frequent)")
    ax_r.set_ylabel("recall on the test set (%)")
    low = min(lows)
    ax_r.set_ylim(max(0, low - 0.5 * (100 - low) - 1), 100)
    ax_r.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(4, len(recalls)),
                frameon=False)
    ax_r.grid(axis="y", alpha=0.3)
    ax_r.set_title("Per-class recall by imbalance handling")
    return fig


# ---------------------------------------------------------------------------------------------
# Building the PDF.
# ---------------------------------------------------------------------------------------------
def build_pdf(outcome: Outcome, data, out: Path, pdf_path: Path, tsne_samples: int = 2000) -> list[str]:
    """Write the PDF from the stored results; returns the section headings, in order."""
    from reportlab.platypus import CondPageBreak, NextPageTemplate, PageBreak
    from reportlab.platypus.tableofcontents import TableOfContents

    from .student import identity

    res = Results(outcome, data, out, tsne_samples)
    doc = Doc(Path(out) / "figures")
    who = identity()
    writer = Sections(res, doc, who)
    story = writer.title_page()
    story += [NextPageTemplate("body"), PageBreak()]
    toc = TableOfContents()
    toc.levelStyles = [doc.s["toc1"], doc.s["toc2"]]
    toc.dotsMinLevel = 0
    story += [doc.p("Contents", "h1"), toc, doc.spacer(6)]
    story += writer.setup_section()
    for build in (writer.s1, writer.s2, writer.s3, writer.s4, writer.s5, writer.s6, writer.s7, writer.s8,
                  writer.s9, writer.s10):
        story += [CondPageBreak(0.4 * doc.frame_height)] + build()
    story += [PageBreak()] + writer.appendix()
    story = glue_headings(story)
    pdf_path = Path(pdf_path)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pdf_path.with_name(f".{pdf_path.name}.tmp")
    footer = f"{who['name']} ({who['roll_number']})  ·  Deep Learning, Assignment 3: MobileNet v1 on imbalanced MNIST"
    template = _doc_template(tmp, footer)
    try:
        template.multiBuild(story)
        tmp.replace(pdf_path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {pdf_path} ({exc.strerror}): choose a writable --pdf") from exc
    return list(writer.headings)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def keep_together(flowables: list):
    """One KeepTogether of ``flowables``, with nested KeepTogethers flattened: reportlab sizes a
    nested one as infinitely tall and would always start a new page for it."""
    from reportlab.platypus import KeepTogether
    flat = []
    for f in flowables:
        flat += f._content if isinstance(f, KeepTogether) else [f]
    return KeepTogether(flat)


def glue_headings(story: list) -> list:
    """Keep every subsection heading on the page of the flowable that follows it."""
    out: list = []
    for flowable in story:
        if out and getattr(out[-1], "toc_level", None) is not None and out[-1].toc_level > 0:
            out[-1] = keep_together([out[-1], flowable])
        else:
            out.append(flowable)
    return out


class Sections:
    """The report's text, tables and figures, section by section.

    Each section method returns its flowables. The 'Setup' box that opens a section is added
    last, so that it can say how long the section's runs and figures took.
    """

    def __init__(self, res: Results, doc: Doc, who: dict):
        import torch

        from .model import ConvDw
        self.res, self.doc, self.who = res, doc, who
        self.headings: list[str] = []
        self.mob, self.conv = res.main["mobilenet"], res.main["conv4"]
        self.mr, self.cr = self.mob["result"], self.conv["result"]
        self.quick = res.data.quick
        self.findings: dict[str, object] = {}
        net = self.mob["net"]
        self.dk = next((b.depthwise.kernel_size[0] for b in net.blocks if isinstance(b, ConvDw)), 3)
        self.kc = next(m.kernel_size[0] for m in self.conv["net"].modules() if isinstance(m, torch.nn.Conv2d))
        _, h, w = net.config.input_dim
        self.hw = f"{h}×{w}"

    # shared pieces ----------------------------------------------------------------------------
    def h1(self, title: str):
        self.headings.append(title)
        return self.doc.heading(title, 0)

    def h2(self, title: str):
        return self.doc.heading(title, 1)

    def section(self, title: str, body, setup) -> list:
        """Heading, then the Setup box (``setup(figure_seconds)``), then ``body()``."""
        heading = self.h1(title)
        before = self.doc.render_seconds
        story = body()
        # the heading, the setup box and the first table, figure or paragraph stay on one page
        return [keep_together([heading, self.doc.setup(setup(self.doc.render_seconds - before)), story[0]])] + story[1:]

    def machine_text(self) -> str:
        m = self.res.machine
        return (f"{escape(m['cpu'])}, {m['cores']} cores, {plural(m['torch_threads'], 'torch thread')}, "
                f"PyTorch {m['torch']}, training on {self.mr['device']}")

    def data_text(self, result: dict | None = None) -> str:
        d = (result or self.mr)["data"]
        return f"{num(d['train'])} training, {num(d['val'])} validation and {num(d['test'])} test images"

    def main_setup(self, figure_seconds: float, what: str = "") -> str:
        mr, cr = self.mr, self.cr
        return (f"{what}The two main models, mobilenet ({mr['spec']['conv_blocks']} conv + "
                f"{mr['spec']['mobilenet_blocks']} MobileNet blocks) and conv4 ({cr['spec']['conv_blocks']} conv "
                f"blocks), each trained {plural(mr['spec']['epochs'], 'epoch')} on {self.data_text()}, seed "
                f"{mr['spec']['seed']}, {LOSS_NAMES.get(mr['spec']['loss'], mr['spec']['loss'])} loss, with otherwise "
                f"identical settings (listed in the experimental setup). Machine: "
                f"{self.machine_text()}. Time: training and evaluation {secs(mr['wall_seconds'])} (mobilenet) and "
                f"{secs(cr['wall_seconds'])} (conv4)"
                + (f"; this section's figures {secs(figure_seconds)}." if figure_seconds >= 0.05 else "."))

    def sweep_setup(self, groups: tuple[str, ...], extra: str, figure_seconds: float) -> str:
        base = self.res.r("balance", "none")
        spec = base["spec"]
        names = {n for g in groups for _, n in self.res.plan.groups[g]}
        return (f"{extra}The sweep baseline is the mobilenet preset ({spec['conv_blocks']} conv + "
                f"{spec['mobilenet_blocks']} MobileNet blocks) trained {plural(self.res.plan.epochs_sweep, 'epoch')} "
                f"(fewer than the main models' {self.res.plan.epochs_main}, to fit the time budget) with "
                f"{OPTIMIZER_NAMES.get(spec['optimizer'], spec['optimizer'])}, peak learning rate {spec['learning_rate']:g}, "
                f"batch {spec['batch_size']}, {LOSS_NAMES.get(spec['loss'], spec['loss'])} loss, seed {spec['seed']}, "
                f"on {self.data_text(base)}. "
                f"Machine: {self.machine_text()}. Time: the {plural(len(names), 'run')} of this section took "
                f"{secs(self.res.time_of(names))} (training and evaluation), its figures {secs(figure_seconds)}.")

    @staticmethod
    def acc_f1(r: dict) -> str:
        return f"{pct(r['metrics']['accuracy'])} accuracy (macro F1 {r['metrics']['f1_macro']:.4f})"

    # title page -------------------------------------------------------------------------------
    def title_page(self) -> list:
        d, res, mr, cr = self.doc, self.res, self.mr, self.cr
        total = sum(r.get("wall_seconds", 0.0) for r in res.results.values())
        counts = res.splits.class_counts("train")
        story = [d.spacer(2.0 * d.cm), d.p("MobileNet v1 blocks on imbalanced MNIST", "title"),
                 d.p("Deep Learning — Assignment 3: Classification of MNIST using PyTorch", "subtitle"),
                 d.p("Report of results", "subtitle"), d.spacer(0.7 * d.cm),
                 d.p(f"<b>{escape(self.who['name'])}</b>", "author"),
                 d.p(f"Roll number {escape(self.who['roll_number'])}", "author"),
                 d.p(time.strftime("%d %B %Y"), "author"), d.spacer(0.7 * d.cm)]
        if self.quick:
            story += [d.p("QUICK MODE: a tiny dataset and one epoch per run, to test the pipeline. "
                          "The numbers in this document are not results.", "warn"), d.spacer(0.4 * d.cm)]
        story.append(d.p(
            f"<b>Summary.</b> A network of {plural(mr['spec']['conv_blocks'], 'standard convolution block')} and "
            f"{mr['spec']['mobilenet_blocks']} MobileNet v1 depthwise-separable blocks reaches {self.acc_f1(mr)} "
            f"on {num(mr['data']['test'])} MNIST test images after {plural(mr['spec']['epochs'], 'epoch')} of "
            f"training on an imbalanced training set whose largest class has {ratio(max(counts), min(counts))} the "
            f"images of the smallest. A plain network of {plural(cr['spec']['conv_blocks'], 'convolution block')} "
            f"reaches {self.acc_f1(cr)} with {ratio(cr['flops'], mr['flops'])} the FLOPs and "
            f"{ratio(cr['parameters'], mr['parameters'])} the parameters. {len(res.results)} training runs in all "
            f"compare block counts, loss functions, batch sizes, learning rates, epochs, training-data size and "
            f"imbalance handling; every number in this report is read from the stored results of those runs."))
        m = res.machine
        rows = [("Machine", escape(m["platform"])), ("CPU", f"{escape(m['cpu'])} ({m['cores']} cores)"),
                ("PyTorch", (f"{m['torch']} (Python {m['python']}), {plural(m['torch_threads'], 'thread')}, "
                            f"training on {mr['device']}")),
                ("Data", escape(res.data.summary()["source"]) + (" (quick subsample)" if self.quick else "")),
                ("Images", self.data_text()),
                ("Runs", (f"{len(res.results)}: {plural(res.plan.epochs_main, 'epoch')} for the two main models, "
                         f"{res.plan.epochs_sweep} for the sweeps")),
                ("Plan time", f"{duration(total)} (the runs' training and evaluation, summed)")]
        story += d.kv_table(d.next_table(), "Where and how the results were produced.", rows)
        return story

    def setup_section(self) -> list:
        d, res, mr = self.doc, self.res, self.mr
        spec = mr["spec"]
        base_loss = res.r("balance", "none")["spec"]["loss"]
        lat = mr["latency"]
        story = [d.heading("Experimental setup", 0)]
        story.append(d.p(
            f"<b>Data.</b> The dataset ({escape(res.data.summary()['source'])}"
            f"{', subsampled for the quick mode' if self.quick else ''}) has a training part, an imbalanced subset of "
            f"MNIST training digits written by mobilenet_lab.prepare, and a test part of MNIST test digits in their "
            f"natural proportions. A stratified, seeded validation set is "
            f"taken from the training part first and judged after every epoch; {KEPT_TEXT[DEFAULTS['keep']]}. Sizes: "
            f"{self.data_text()}. Images are {self.hw} grayscale, standardised with the mean and standard deviation "
            f"of the training images; every training batch is augmented with a random rotation, shift and scale per "
            f"image{ELASTIC_SETUP if spec.get('elastic') else ''}. Class counts are in Section 9."))
        story.append(d.p(
            f"<b>Models.</b> Every network is input → conv blocks → MobileNet blocks → global average pooling → "
            f"fully connected layer. A conv block is a {self.kc}×{self.kc} convolution with batch norm and ReLU; a "
            f"MobileNet (ConvDw) block is a {self.dk}×{self.dk} depthwise convolution and a 1×1 pointwise "
            f"convolution, each with batch norm and ReLU. Every second block halves the feature map and doubles the "
            f"channels while the map is large enough. The two main models are <i>mobilenet</i> "
            f"({spec['conv_blocks']} conv + {spec['mobilenet_blocks']} MobileNet blocks, the assignment's sample "
            f"network) and <i>conv4</i> ({self.cr['spec']['conv_blocks']} conv blocks, no MobileNet block)."))
        story.append(d.p(
            f"<b>Training.</b> {OPTIMIZER_NAMES.get(spec['optimizer'], spec['optimizer'])} with a one-cycle "
            f"learning-rate schedule peaking at {spec['learning_rate']:g}, batch {spec['batch_size']}, "
            f"seed {spec['seed']}. The main models are trained for {plural(res.plan.epochs_main, 'epoch')} with "
            f"{LOSS_NAMES.get(spec['loss'], spec['loss'])} loss{augmentation_phrase(spec)}{averaging(spec)} (the recipe of the saved models); "
            f"every sweep run "
            f"for {res.plan.epochs_sweep} (the epochs sweep excepted) with {LOSS_NAMES.get(base_loss, base_loss)} "
            f"loss unless the sweep varies it, so that the loss and imbalance sweeps start from a plain baseline. "
            f"Each run's settings are in Appendix A."))
        story.append(d.p(
            f"<b>Measures.</b> Accuracy; <i>macro F1</i>, the mean of the {len(res.names)} per-class F1 scores, in "
            f"which every class counts the same however rare; <i>balanced accuracy</i>, the mean per-class recall; "
            f"one-vs-rest ROC AUC. FLOPs are counted for one image with torch.utils.flop_counter (a multiply-add is "
            f"2 FLOPs; batch norm, ReLU and pooling are not counted). CPU latency is the median time of "
            f"{lat['iterations']} single-image forward passes (batch norms folded into the convolutions, as the "
            f"evaluation runs them) after {lat['warmup']} warm-up passes with "
            f"{plural(lat['threads'], 'torch thread')}; time per epoch is measured during training and includes the "
            f"validation pass."))
        rows = []
        for g, members in res.plan.groups.items():
            values = ", ".join(f"{v[0]}c+{v[1]}m" if g == "grid" else value_label(g, v) for v, _ in members)
            epochs = sorted({res.results[n]["spec"]["epochs"] for _, n in members})
            rows.append([GROUP_TITLES[g], escape(values), ", ".join(map(str, epochs)), str(len(members)),
                         secs(res.group_time(g))])
        story += d.table(d.next_table(), f"The experiment plan: {len(res.results)} distinct runs. Runs with identical "
                                         f"settings are trained once and shared between groups (the sweep baseline is "
                                         f"in every sweep); grid values are conv (c) and MobileNet (m) blocks.",
                         ["group", "values", "epochs", "runs", "time"], rows, widths=[0.17, 0.53, 0.1, 0.08, 0.12],
                         left_cols=2)
        return story

    # 1 ----------------------------------------------------------------------------------------
    def s1(self) -> list:
        return self.section(SECTIONS[0], self._s1, lambda f: self.main_setup(f))

    def _s1(self) -> list:
        import torch
        d, res, mr, cr = self.doc, self.res, self.mr, self.cr
        mm, cm_ = mr["metrics"], cr["metrics"]
        story = []

        def row(label, a, b, fmt, rel=True):
            return [label, fmt(a), fmt(b), ratio(b, a) if rel and a else ""]
        rows = [
            ["blocks (conv + MobileNet)", f"{mr['spec']['conv_blocks']} + {mr['spec']['mobilenet_blocks']}",
             f"{cr['spec']['conv_blocks']} + {cr['spec']['mobilenet_blocks']}", ""],
            row("test accuracy", mm["accuracy"], cm_["accuracy"], pct, False),
            row("balanced accuracy", mm["balanced_accuracy"], cm_["balanced_accuracy"], pct, False),
            row("macro F1", mm["f1_macro"], cm_["f1_macro"], lambda v: f"{v:.4f}", False),
            row("ROC AUC (macro)", mm["roc_auc_macro"], cm_["roc_auc_macro"], lambda v: f"{v:.5f}", False),
            row("test loss", mr["test_loss"], cr["test_loss"], lambda v: f"{v:.4f}", False),
            row("training accuracy (no augmentation)", mr["train_accuracy"], cr["train_accuracy"], pct, False),
            ["best validation accuracy (epoch)", f"{pct(mr['best_val_accuracy'])} ({mr['best_epoch']})",
             f"{pct(cr['best_val_accuracy'])} ({cr['best_epoch']})", ""],
            row("parameters", mr["parameters"], cr["parameters"], num),
            row("FLOPs per image", mr["flops"], cr["flops"], mflops),
            row("CPU latency per image (median)", mr["latency"]["median_ms"], cr["latency"]["median_ms"], ms),
            row("CPU latency per image (90th percentile)", mr["latency"]["p90_ms"], cr["latency"]["p90_ms"], ms),
            row("training time per epoch", mr["seconds_per_epoch"], cr["seconds_per_epoch"], secs),
            row("test throughput (batches of 1,000)", mr["test_images_per_second"], cr["test_images_per_second"],
                lambda v: f"{num(v)} images/s"),
        ]
        t1 = d.next_table()
        story += d.table(t1, "The two main models on the test set, and their cost. Last column: conv4's value over "
                             "mobilenet's.", ["", "mobilenet", "conv4", "conv4 / mobilenet"], rows,
                         widths=[0.4, 0.21, 0.21, 0.18])
        diff = mm["accuracy"] - cm_["accuracy"]
        spread = res.seed_spread()
        lead = ("The MobileNet-block network is the more accurate" if diff > 0 else
                "The plain conv network is the more accurate" if diff < 0 else "Both networks are equally accurate")
        story.append(d.p(
            f"<b>Accuracy.</b> {lead}: {pct(mm['accuracy'])} against {pct(cm_['accuracy'])} ({pp(diff)} for "
            f"mobilenet), macro F1 {mm['f1_macro']:.4f} against {cm_['f1_macro']:.4f}. For scale, the sweep "
            f"baseline trained with {plural(len(res.ok('seed')), 'seed')} spans {pp(spread).lstrip('+')} in accuracy "
            f"(Section 7), so this difference is {'larger than' if abs(diff) > spread else 'within'} run-to-run "
            f"noise. Training accuracy (measured without augmentation) minus test accuracy is "
            f"{pp(mr['train_accuracy'] - mm['accuracy'])} for mobilenet and {pp(cr['train_accuracy'] - cm_['accuracy'])} "
            + ("for conv4: little overfitting, which augmentation, weight decay and the small size of both networks "
               "keep in check." if max(mr['train_accuracy'] - mm['accuracy'], cr['train_accuracy'] - cm_['accuracy'])
               < 0.01 else "for conv4: the networks fit their training images better than unseen ones.")))
        lm, lc = self._top_layers(mr), self._top_layers(cr)
        pw = sum(r["flops"] for r in mr["layers"] if r["part_of"] and r["name"].strip().startswith("pointwise"))
        dw = sum(r["flops"] for r in mr["layers"] if r["part_of"] and r["name"].strip().startswith("depthwise"))
        big_c = max(lc, key=lambda r: r["flops"])
        full = [r for r in lm if " conv " in f" {r['name']} "]
        t2 = d.next_table()
        story.append(d.p(
            f"<b>Cost.</b> conv4 has {ratio(cr['parameters'], mr['parameters'])} the parameters and "
            f"{ratio(cr['flops'], mr['flops'])} the FLOPs of mobilenet, with fewer blocks. Table {t2} shows where "
            f"they go: each {self.kc}×{self.kc} convolution of conv4 combines all input channels at every position; "
            f"its most expensive layer ({escape(big_c['name'].split('  ', 1)[-1])}) alone takes "
            f"{mflops(big_c['flops'])}, {pct(big_c['flops'] / cr['flops'], 1)} of the network. mobilenet's ConvDw "
            f"blocks spend {pct(pw / (pw + dw), 1)} of their FLOPs in the 1×1 pointwise convolutions and only "
            f"{pct(dw / (pw + dw), 1)} in the {self.dk}×{self.dk} depthwise filters; "
            + (f"its {plural(len(full), 'full convolution')} ({', '.join(r['name'].split()[0] for r in full)}) "
               f"take{'s' * (len(full) == 1)} {mflops(sum(r['flops'] for r in full))}." if full else
               "it has no full convolution.")))
        rows2 = []
        for arch, layers in (("mobilenet", lm), ("conv4", lc)):
            total = res.main[arch]["result"]["flops"]
            for r in layers:
                rows2.append([arch, escape(r["name"]), "×".join(map(str, r["shape"])), num(r["params"]),
                              mflops(r["flops"]) if r["flops"] else "0", pct(r["flops"] / total, 1)])
        story += d.table(t2, f"Each network's parameters and FLOPs, layer by layer, for one {self.hw} image "
                             f"(output shape: channels×height×width).",
                         ["model", "layer", "output", "parameters", "FLOPs", "share"], rows2,
                         widths=[0.12, 0.38, 0.12, 0.13, 0.15, 0.1], left_cols=3)
        n_conv = {a: sum(isinstance(m, torch.nn.Conv2d) for m in res.main[a]["net"].modules())
                  for a in ("mobilenet", "conv4")}
        gflops_m = mr["flops"] / (mr["latency"]["median_ms"] / 1000) / 1e9
        gflops_c = cr["flops"] / (cr["latency"]["median_ms"] / 1000) / 1e9
        lat_ratio = cr["latency"]["median_ms"] / mr["latency"]["median_ms"]
        flop_ratio = cr["flops"] / mr["flops"]
        story.append(d.p(
            f"<b>Time.</b> conv4 needs {ratio(cr['flops'], mr['flops'])} the FLOPs, but its single-image latency is "
            f"{ratio(cr['latency']['median_ms'], mr['latency']['median_ms'])} mobilenet's "
            f"({ms(cr['latency']['median_ms'])} against {ms(mr['latency']['median_ms'])}) and an epoch of training "
            f"takes {ratio(cr['seconds_per_epoch'], mr['seconds_per_epoch'])} as long. As arithmetic throughput, "
            f"conv4 runs at {gflops_c:.2f} GFLOP/s and mobilenet at {gflops_m:.2f} GFLOP/s. "
            + ("So despite its fewer FLOPs, mobilenet is the slower network on this CPU. " if lat_ratio < 1 else
               "So the saving in time is much smaller than the saving in FLOPs. " if lat_ratio < 0.67 * flop_ratio else
               "The saving in time is close to the saving in FLOPs. " if lat_ratio < 1.5 * flop_ratio else "")
            + f"A {self.dk}×{self.dk} depthwise convolution does only {self.dk * self.dk} multiply-adds per input "
              f"value and cannot reuse that value across output channels, so it is limited by memory traffic rather "
              f"than arithmetic; and mobilenet runs {n_conv['mobilenet']} convolution layers against conv4's "
              f"{n_conv['conv4']}, each followed by batch norm and ReLU and each with a fixed per-call overhead. "
              f"Section 8 measures this block by block."))
        self.findings["s1"] = {"diff": diff, "lat_ratio": lat_ratio, "flop_ratio": flop_ratio}
        return story

    @staticmethod
    def _top_layers(result: dict) -> list[dict]:
        return [r for r in result["layers"] if r["part_of"] is None and not r["name"].startswith("input")]

    # 2 ----------------------------------------------------------------------------------------
    def s2(self) -> list:
        return self.section(SECTIONS[1], self._s2,
                            lambda f: self.sweep_setup(("grid",), "Only the numbers of blocks change. ", f))

    def _s2(self) -> list:
        d, res = self.doc, self.res
        story, rows, table = [], [], []
        for (conv, mob), r in res.group("grid"):
            ok = r["status"] == "ok"
            rows.append({"conv": conv, "mob": mob, "acc": r["metrics"]["accuracy"] if ok else None,
                         "f1": r["metrics"]["f1_macro"] if ok else None, "flops": r.get("flops", 0),
                         "params": r["parameters"]})
            table.append([str(conv), str(mob), num(r["parameters"]), mflops(r["flops"]) if ok else "",
                          ms(r["latency"]["median_ms"]) if ok else "", secs(r["seconds_per_epoch"]) if ok else "",
                          pct(r["metrics"]["accuracy"]) if ok else r["status"],
                          f"{r['metrics']['f1_macro']:.4f}" if ok else ""])
        convs, mobiles = sorted({r["conv"] for r in rows}), sorted({r["mob"] for r in rows})
        story += d.table(d.next_table(), f"The block-count grid after {plural(res.plan.epochs_sweep, 'epoch')} each: "
                                         f"cost and test results.",
                         ["conv blocks", "MobileNet blocks", "parameters", "FLOPs", "latency", "s / epoch",
                          "accuracy", "macro F1"], table, widths=[0.1, 0.13, 0.12, 0.15, 0.12, 0.11, 0.13, 0.14],
                         left_cols=2)
        path = d.render("s2_grid", lambda make: plot_grid(make, rows, convs, mobiles))
        story.append(d.figure(d.next_figure(), path, "Left: test accuracy for each number of conv blocks (rows) and "
                                                     "MobileNet blocks (columns). Right: accuracy against FLOPs per "
                                                     "image; the marker area grows with the parameter count."))
        good = [r for r in rows if r["acc"] is not None]
        best, worst = max(good, key=lambda r: r["acc"]), min(good, key=lambda r: r["acc"])
        tolerance = max(NEAR_BEST, res.seed_spread())
        cheapest = min((r for r in good if best["acc"] - r["acc"] <= tolerance), key=lambda r: r["flops"])
        text = (f"The most accurate configuration is {best['conv']} conv + {best['mob']} MobileNet blocks with "
                f"{pct(best['acc'])} ({mflops(best['flops'])}, {num(best['params'])} parameters); the least accurate "
                f"is {worst['conv']} conv + {worst['mob']} MobileNet with {pct(worst['acc'])} "
                f"({mflops(worst['flops'])}). ")
        if cheapest is not best:
            text += (f"Within {pp(best['acc'] - cheapest['acc']).lstrip('+')} of the best (the tolerance is the larger "
                     f"of the seed spread and {pp(NEAR_BEST).lstrip('+')}), {cheapest['conv']} conv + {cheapest['mob']} MobileNet blocks "
                     f"need only {ratio(cheapest['flops'], best['flops'])} of its FLOPs.")
        story.append(d.p(text))
        trends = []
        for conv in convs:
            line = sorted([r for r in good if r["conv"] == conv], key=lambda r: r["mob"])
            if len(line) > 1:
                trends.append(f"with {plural(conv, 'conv block')}, going from {line[0]['mob']} to {line[-1]['mob']} "
                              f"MobileNet blocks changes accuracy from {pct(line[0]['acc'])} to {pct(line[-1]['acc'])} "
                              f"({pp(line[-1]['acc'] - line[0]['acc'])}) at {ratio(line[-1]['flops'], line[0]['flops'])} "
                              f"the FLOPs")
        if trends:
            story.append(d.p("<b>Adding MobileNet blocks</b>: " + "; ".join(trends) + ". Each block adds depth, i.e. "
                             "a larger receptive field and one more non-linearity, for a small FLOP cost, since a "
                             f"ConvDw block costs 1/N + 1/{self.dk * self.dk} of a standard convolution (Section 8)."))
        alone = sorted([r for r in good if r["mob"] == 0], key=lambda r: r["conv"])
        if len(alone) > 1:
            rising = all(b["acc"] >= a["acc"] for a, b in itertools.pairwise(alone))
            story.append(d.p(
                "<b>Conv blocks alone</b>: " + ", ".join(f"{plural(r['conv'], 'block')} {pct(r['acc'])} "
                                                         f"({mflops(r['flops'])})" for r in alone)
                + f". A single block sees only a {self.kc}×{self.kc} neighbourhood of each pixel before global "
                  f"pooling, so it can detect strokes but not their arrangement; accuracy "
                  + ("rises with every added block." if rising else "does not rise steadily with more blocks here.")))
        self.findings["s2"] = (best, cheapest, worst)
        return story

    # 3 ----------------------------------------------------------------------------------------
    def s3(self) -> list:
        return self.section(SECTIONS[2], self._s3, lambda f: self.main_setup(
            f, f"Test-set results on all {num(self.mr['data']['test'])} test images. "))

    def _s3(self) -> list:
        d, names = self.doc, self.res.names
        mm, cm_ = self.mr["metrics"], self.cr["metrics"]
        counts = self.res.splits.class_counts("train")
        rows = []
        for i, n in enumerate(names):
            a, b = mm["per_class"][n], cm_["per_class"][n]
            rows.append([n, num(counts[i]), num(a["support"]), pct(a["precision"]), pct(a["recall"]),
                         f"{a['f1']:.4f}", pct(b["precision"]), pct(b["recall"]), f"{b['f1']:.4f}"])
        rows.append(["macro", num(sum(counts)), num(mm["n"]), pct(mm["precision_macro"]), pct(mm["recall_macro"]),
                     f"{mm['f1_macro']:.4f}", pct(cm_["precision_macro"]), pct(cm_["recall_macro"]),
                     f"{cm_['f1_macro']:.4f}"])
        rows.append(["accuracy", "", "", "", pct(mm["accuracy"]), "", "", pct(cm_["accuracy"]), ""])
        story = d.table(d.next_table(), "Per-class precision, recall and F1 on the test set. 'macro' is the mean over "
                                         "classes (the macro recall is the balanced accuracy).",
                        ["class", "training images", "test images", "precision", "recall", "F1", "precision",
                         "recall", "F1"], rows, widths=[0.1, 0.12, 0.11, 0.11, 0.11, 0.1, 0.11, 0.11, 0.13],
                        bold_rows=(len(names),), groups=[("", 3), ("mobilenet", 3), ("conv4", 3)])
        paths = [d.render(f"s3_confusion_{a}", lambda make, a=a: viz.plot_confusion(
            make, self.res.main[a]["result"]["metrics"], names)) for a in ("mobilenet", "conv4")]
        story.append(d.figure(d.next_figure(), paths, "Confusion matrices on the test set: (a) mobilenet, (b) conv4. "
                                                      "Left of each: counts; right: each row divided by its class "
                                                      "size, so that the diagonal is the recall of that class.",
                              max_height=0.8, min_scale=0.92))
        for arch, m in (("mobilenet", mm), ("conv4", cm_)):
            recall = {n: m["per_class"][n]["recall"] for n in names}
            lo, hi = min(recall, key=recall.get), max(recall, key=recall.get)
            pairs = self._confusions(m["confusion_matrix"], names)[:3]
            wrong = m["n"] - int(np.trace(np.asarray(m["confusion_matrix"])))
            story.append(d.p(
                f"<b>{arch}</b>: accuracy {pct(m['accuracy'])} ({num(wrong)} of {num(m['n'])} images wrong), balanced "
                f"accuracy {pct(m['balanced_accuracy'])}. Recall ranges from {pct(recall[lo])} (digit {lo}) to "
                f"{pct(recall[hi])} (digit {hi}). "
                + ("The most frequent confusions are " + "; ".join(f"{t} read as {p} ({plural(c, 'time')})"
                                                                  for t, p, c in pairs) + "." if pairs else
                   "There are no confusions.")))
        return story

    @staticmethod
    def _confusions(cm, names) -> list[tuple[str, str, int]]:
        cm = np.asarray(cm)
        pairs = [(names[i], names[j], int(cm[i, j])) for i in range(len(cm)) for j in range(len(cm))
                 if i != j and cm[i, j] > 0]
        return sorted(pairs, key=lambda p: -p[2])

    # 4 ----------------------------------------------------------------------------------------
    def s4(self) -> list:
        return self.section(SECTIONS[3], self._s4, lambda f: self.main_setup(
            f, f"Predictions of the best-validation-epoch weights on the {num(self.mr['data']['test'])} test images. "
               f"Correct examples are random, of different classes; wrong examples are the wrong predictions made "
               f"with the highest confidence. "))

    def _s4(self) -> list:
        d, names, splits = self.doc, self.res.names, self.res.splits
        y = splits.test_y.numpy()
        paths, texts = [], []
        for arch in ("mobilenet", "conv4"):
            pred = self.res.main[arch]["pred"]
            yp, probs = pred.labels.numpy(), pred.probs.numpy()
            correct, wrong = viz.pick_examples(y, yp, probs)
            paths.append(d.render(f"s4_predictions_{arch}", lambda make, yp=yp, probs=probs, c=correct, w=wrong:
                                  viz.plot_predictions(make, splits.test_x, y, yp, probs, names, c, w)))
            conf = probs[np.arange(len(yp)), yp]
            ok = yp == y
            text = f"<b>{arch}</b>: {num((~ok).sum())} of {num(len(y))} test images are wrong. "
            if ok.any() and (~ok).any():
                text += (f"The mean confidence (softmax probability of the predicted class) is {pct(conf[ok].mean(), 1)} "
                         f"for correct and {pct(conf[~ok].mean(), 1)} for wrong predictions; "
                         f"{pct((conf[~ok] > CONFIDENT).mean(), 1)} of the wrong predictions are made with more than "
                         f"{pct(CONFIDENT, 0)} confidence, against {pct((conf[ok] > CONFIDENT).mean(), 1)} of the "
                         f"correct ones. ")
            if len(wrong):
                i = wrong[0]
                text += (f"The most confident mistake reads a {names[y[i]]} as {names[yp[i]]} with "
                         f"{pct(conf[i], 1)} confidence.")
            texts.append(text)
        story = [d.figure(d.next_figure(), paths, "Correct (upper row of each part) and wrong (lower row) test "
                                                  "predictions with true label, prediction and confidence: "
                                                  "(a) mobilenet, (b) conv4.", max_height=0.8, min_scale=0.9)]
        story += [d.p(t) for t in texts]
        story.append(d.p("Confidence separates right from wrong only partly: a network trained with a softmax loss "
                         f"({LOSS_NAMES.get(self.mr['spec']['loss'], self.mr['spec']['loss'])} here) is "
                         "pushed towards confident outputs on its training images, so a test digit that resembles "
                         "another class (the confusion pairs of Section 3) can be misread with high confidence."))
        return story

    # 5 ----------------------------------------------------------------------------------------
    def s5(self) -> list:
        return self.section(SECTIONS[4], self._s5, lambda f: self.main_setup(
            f, "The learned weights of the stored main models, drawn with a diverging colour scale centred on zero. "))

    def _s5(self) -> list:
        import torch
        d = self.doc
        paths, texts, edge = [], [], {}
        for arch in ("mobilenet", "conv4"):
            net = self.res.main[arch]["net"]
            paths.append(d.render(f"s5_filters_{arch}", lambda make, net=net: viz.plot_filters(make, net)))
            convs = [(n, m) for n, m in net.blocks.named_modules() if isinstance(m, torch.nn.Conv2d)]
            name, last = convs[-1]
            w = last.weight.detach().float()
            norms = w.flatten(1).norm(dim=1)
            weak = int((norms < 0.1 * norms.max()).sum())
            kind = "1×1 pointwise" if last.kernel_size == (1, 1) else f"{last.kernel_size[0]}×{last.kernel_size[1]}"
            text = (f"<b>{arch}</b>: the last convolution, blocks.{escape(name)}, is a {kind} convolution "
                    f"{last.in_channels}→{last.out_channels} with {num(w.numel())} weights between {float(w.min()):.3f} "
                    f"and {float(w.max()):.3f}; {weak} of its {last.out_channels} filters have less than a tenth of "
                    f"the largest filter's norm, i.e. are nearly unused.")
            if last.kernel_size == (1, 1):
                spatial = [m for _, m in convs if m.kernel_size != (1, 1)][-1]
                k = spatial.weight.detach().float().flatten(1)
                centre = float((k.abs().argmax(1) == k.shape[1] // 2).float().mean())
                text += (f" A 1×1 kernel has no spatial pattern (each row of the matrix in Figure "
                         f"{d.figure_no + 1}(a), right, says how one output channel mixes the inputs), so the figure "
                         f"also shows the last depthwise {self.dk}×{self.dk} filters, one per channel: in "
                         f"{pct(centre, 1)} of them the centre weight is the largest in magnitude, in the rest a "
                         f"neighbour pixel is, i.e. the filter looks for a shifted or oriented pattern.")
            texts.append(text)
            first = convs[0][1].weight.detach().float().flatten(1)
            edge[arch] = float((first.sum(1).abs() < EDGE_SHARE * first.abs().sum(1)).float().mean())
        story = [d.figure(d.next_figure(), paths, "Learned filters (red positive, blue negative weights): first and "
                                                  "last convolution layers of (a) mobilenet, with its last depthwise "
                                                  "layer, and (b) conv4.", max_height=0.8)]
        story += [d.p(t) for t in texts]
        story.append(d.p(
            f"<b>First layers.</b> A kernel whose positive and negative weights nearly cancel (their sum is below "
            f"{pct(EDGE_SHARE, 0)} of the sum of their magnitudes) responds to changes in brightness, i.e. to edges "
            f"and stroke borders, not to brightness itself. {pct(edge['mobilenet'], 1)} of mobilenet's and "
            f"{pct(edge['conv4'], 1)} of conv4's first-layer kernels are of that kind. Deeper filters combine many "
            f"channels, so they do not read as pictures; what they show is which channels are mixed and how "
            f"strongly."))
        return story

    # 6 ----------------------------------------------------------------------------------------
    def s6(self) -> list:
        n = num(min(self.res.tsne_samples, len(self.res.splits.test_y)))
        return self.section(SECTIONS[5], self._s6, lambda f: self.main_setup(
            f, f"mobilenet is the network with MobileNet blocks, conv4 the one without. Test figures use all "
               f"{num(self.mr['data']['test'])} test images, t-SNE a random {n} of them. "))

    def _s6(self) -> list:
        from sklearn.decomposition import PCA
        from sklearn.metrics import silhouette_score
        d, names, res = self.doc, self.res.names, self.res
        y = res.splits.test_y.numpy()
        mr, cr = self.mr, self.cr
        story = [self.h2("6.1 Accuracy and loss curves")]
        curves = [d.render(f"s6_curves_{a}", lambda make, a=a: viz.plot_curves(make, res.main[a]["result"]["history"]))
                  for a in ("mobilenet", "conv4")]
        story.append(d.figure(d.next_figure(), curves, "Loss and accuracy per epoch, training (on augmented batches) "
                                                       "and validation: (a) with MobileNet blocks, (b) without "
                                                       "(conv4).", max_height=0.7))
        path = d.render("s6_overlay", lambda make: plot_overlay(
            make, {a: res.main[a]["result"]["history"] for a in ("mobilenet", "conv4")}))
        story.append(d.figure(d.next_figure(), path, "The same curves on shared axes (loss on a log scale): dashed "
                                                     "training, solid validation."))
        hm, hc = mr["history"], cr["history"]
        story.append(d.p(
            f"mobilenet reaches its best validation accuracy, {pct(mr['best_val_accuracy'])}, at epoch "
            f"{mr['best_epoch']}; conv4 reaches {pct(cr['best_val_accuracy'])} at epoch {cr['best_epoch']}. After "
            f"the first epoch the validation accuracy is {pct(hm['val_acc'][0])} with MobileNet blocks and "
            f"{pct(hc['val_acc'][0])} without. The last epoch ends with a training loss of {hm['train_loss'][-1]:.4f} "
            f"against {hc['train_loss'][-1]:.4f} and a validation loss of {hm['val_loss'][-1]:.4f} against "
            f"{hc['val_loss'][-1]:.4f}. Training accuracy, measured on augmented images while the weights are "
            f"still changing, lies below validation accuracy in "
            f"{sum(t < v for t, v in zip(hm['train_acc'], hm['val_acc']))} of {len(hm['epoch'])} epochs for "
            f"mobilenet and {sum(t < v for t, v in zip(hc['train_acc'], hc['val_acc']))} of {len(hc['epoch'])} for "
            f"conv4; the augmentation makes the training task the harder one."
            if len(hm["epoch"]) > 1 else
            f"mobilenet reaches a validation accuracy of {pct(mr['best_val_accuracy'])} and conv4 "
            f"{pct(cr['best_val_accuracy'])} in their single epoch."))
        story.append(self.h2("6.2 ROC curves"))
        rocs = [d.render(f"s6_roc_{a}", lambda make, a=a: viz.plot_roc(
            make, y, res.main[a]["pred"].probs.numpy(), names, res.main[a]["result"]["metrics"]))
            for a in ("mobilenet", "conv4")]
        roc_figure = d.next_figure()
        am, ac = mr["metrics"]["roc_auc_per_class"], cr["metrics"]["roc_auc_per_class"]
        low_m, low_c = min(am, key=am.get), min(ac, key=ac.get)
        story.append(d.p(
            f"The macro AUC is {mr['metrics']['roc_auc_macro']:.5f} with MobileNet blocks and "
            f"{cr['metrics']['roc_auc_macro']:.5f} without; the weakest class is {low_m} (AUC {am[low_m]:.5f}) for "
            f"mobilenet and {low_c} (AUC {ac[low_c]:.5f}) for conv4. The AUC measures how well the probabilities rank "
            f"a class above the others, over all thresholds; when it is close to 1 the linear plots look alike and the "
            f"log-scale panels show where the two models differ: at low false-positive rates (Figure {roc_figure})."))
        story.append(d.figure(roc_figure, rocs, "One-vs-rest ROC curves per class from the softmax probabilities: "
                                                "(a) with MobileNet blocks, (b) without. Right panels: false positive "
                                                "rate on a log scale.", max_height=0.7))
        story.append(self.h2("6.3 Confusion matrices"))
        path = d.render("s6_confusion_pair", lambda make: plot_confusion_pair(
            make, {a: res.main[a]["result"]["metrics"]["confusion_matrix"] for a in ("mobilenet", "conv4")}, names))
        story.append(d.figure(d.next_figure(), path, "Row-normalised confusion matrices side by side on one colour "
                                                     "scale: with MobileNet blocks (left) and without (right). Counts "
                                                     "are in Section 3."))
        diffs = [(n, mr["metrics"]["per_class"][n]["recall"] - cr["metrics"]["per_class"][n]["recall"]) for n in names]
        big = max(diffs, key=lambda t: abs(t[1]))
        story.append(d.p(
            f"mobilenet has the higher recall on {plural(sum(1 for _, v in diffs if v > 0), 'class')}, conv4 on "
            f"{sum(1 for _, v in diffs if v < 0)}, and they tie on {sum(1 for _, v in diffs if v == 0)}; the largest "
            f"difference is for digit {big[0]} ({pp(big[1])} for mobilenet)."))
        story.append(self.h2("6.4 t-SNE maps"))
        n = min(res.tsne_samples, len(y))
        chosen = np.sort(np.random.default_rng(0).choice(len(y), n, replace=False))
        tsnes, sil = [], {}
        for a in ("mobilenet", "conv4"):
            m = res.main[a]
            tsnes.append(d.render(f"s6_tsne_{a}", lambda make, m=m: viz.plot_tsne(
                make, m["net"], res.splits.test_x, y, m["pred"].labels.numpy(), names, res.tsne_samples),
                style=TSNE_STYLE))
            feats = viz.penultimate_features(m["net"], res.splits.test_x[chosen])
            if feats.shape[1] > SILHOUETTE_DIMS and n > SILHOUETTE_DIMS:
                feats = PCA(SILHOUETTE_DIMS, random_state=0).fit_transform(feats)
            labels = y[chosen]
            sil[a] = float(silhouette_score(feats, labels)) if 1 < len(set(labels)) < n else float("nan")
        story.append(d.figure(d.next_figure(), tsnes, "t-SNE maps of the penultimate-layer (global-average-pooled) "
                                                      "features of test images, coloured by true class: (a) with "
                                                      "MobileNet blocks, (b) without. Rings mark misclassified "
                                                      "images.", columns=2, max_height=0.5))
        quality = {a: ("well separated" if v > 0.5 else "separated but with overlap" if v > 0.2 else "overlapping")
                   for a, v in sil.items()}
        story.append(d.p(
            f"To put a number on the maps: the silhouette score of the features by true class (1: tight, well "
            f"separated clusters; 0: overlapping) is {sil['mobilenet']:.3f} with MobileNet blocks "
            f"({self._feat_dim('mobilenet')}-dimensional features) and {sil['conv4']:.3f} without "
            f"({self._feat_dim('conv4')}-dimensional; both reduced to {SILHOUETTE_DIMS} dimensions by PCA, as "
            f"before t-SNE), on the same {num(n)} images: clusters "
            + (f"{quality['mobilenet']} for both" if quality["mobilenet"] == quality["conv4"] else
               f"{quality['mobilenet']} for mobilenet and {quality['conv4']} for conv4")
            + ". t-SNE keeps neighbourhoods, not "
            "distances, so the size of and the gaps between the clusters in the maps carry no meaning; the "
            "silhouette is computed on the features themselves."))
        self.findings["s6"] = sil
        return story

    def _feat_dim(self, arch: str) -> int:
        return int(self.res.main[arch]["net"].fc.in_features)

    # 7 ----------------------------------------------------------------------------------------
    def s7(self) -> list:
        return self.section(SECTIONS[6], self._s7, lambda f: self.sweep_setup(
            ("loss", "batch", "lr", "epochs", "fraction", "seed"), "Each sweep changes one setting of the baseline. ",
            f))

    def _s7(self) -> list:
        d, res = self.doc, self.res
        test_n = self.mr["data"]["test"]
        spread = res.seed_spread()
        seeds = res.ok("seed")
        story = [d.p(
            f"<b>Noise level first.</b> The baseline trained with seeds {', '.join(str(v) for v, _ in seeds)} reaches "
            f"{', '.join(pct(r['metrics']['accuracy']) for _, r in seeds)}: a spread of {pp(spread).lstrip('+')} "
            f"(percentage points). A difference between two settings smaller than that is no evidence of an "
            f"effect.")]

        def sweep_rows(group: str, extra=None) -> list[list[str]]:
            rows = []
            for v, r in res.group(group):
                ok = r["status"] == "ok"
                cells = [value_label(group, v)] + (extra(r) if extra else [])
                cells += ([pct(r["metrics"]["accuracy"]), pct(r["metrics"]["balanced_accuracy"]),
                           f"{r['metrics']['f1_macro']:.4f}", f"{pct(r['best_val_accuracy'])} ({r['best_epoch']})",
                           secs(r["seconds_per_epoch"]), secs(r["wall_seconds"])]
                          if ok else [r["status"], "", "", "", "", secs(r["wall_seconds"])])
                rows.append(cells)
            return rows

        heads = ["accuracy", "balanced accuracy", "macro F1", "best val. acc. (epoch)", "s / epoch", "run time"]
        panels = []
        for k, (group, label, title, xlabel, categorical) in enumerate((
                ("loss", "loss", "Loss function", "loss", True),
                ("batch", "batch size", "Batch size", "batch size", False),
                ("lr", "peak learning rate", "Learning rate", "learning rate", False),
                ("epochs", "epochs", "Epochs", "epochs", False),
                ("fraction", "training fraction", "Training-data ratio", "training images", False)), 1):
            extra, header, widths = None, [label] + heads, [0.16, 0.12, 0.13, 0.11, 0.18, 0.12, 0.18]
            if group == "fraction":
                def extra(r):
                    return [num(r["data"]["train"]), f"{r['data']['train'] / test_n:.2f} : 1"]
                header = [label, "training images", "train : test"] + heads
                widths = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.16, 0.1, 0.14]
            story.append(self.h2(f"7.{k} {title}"))
            epochs = "" if group == "epochs" else f" after {plural(res.plan.epochs_sweep, 'epoch')}"
            story += d.table(d.next_table(), f"{title} sweep: test-set results{epochs}.", header,
                             sweep_rows(group, extra), widths=widths)
            story.append(d.p(self._sweep_text(group)))
            pairs = res.group(group)
            panels.append((title, xlabel, [r["data"]["train"] if group == "fraction" else v for v, r in pairs],
                           [r["metrics"]["accuracy"] if r["status"] == "ok" else None for _, r in pairs],
                           [r["metrics"]["f1_macro"] if r["status"] == "ok" else None for _, r in pairs], categorical))
        panels.append(("Seed (baseline)", "seed", [v for v, _ in seeds], [r["metrics"]["accuracy"] for _, r in seeds],
                       [r["metrics"]["f1_macro"] for _, r in seeds], True))
        story.append(self.h2("7.6 All sweeps at a glance"))
        path = d.render("s7_sweeps", lambda make: plot_sweeps(make, panels))
        story.append(d.figure(d.next_figure(), path, "Test accuracy and macro F1 for every swept setting; the seed "
                                                     "panel shows the run-to-run noise of the baseline."))
        lr_runs = [(f"lr {v:g}", r["history"]) for v, r in res.ok("lr")]
        ep_runs = [(plural(v, "epoch"), r["history"]) for v, r in res.ok("epochs")]
        path = d.render("s7_curves", lambda make: plot_sweep_curves(make, lr_runs, ep_runs))
        story.append(d.figure(d.next_figure(), path, "Validation accuracy per epoch for each peak learning rate (left) "
                                                     "and each epoch budget (right)."))
        return story

    def _sweep_text(self, group: str) -> str:
        res = self.res
        ok = res.ok(group)
        failed = [v for v, r in res.group(group) if r["status"] != "ok"]
        best_v, best = max(ok, key=lambda t: t[1]["metrics"]["accuracy"])
        worst_v, worst = min(ok, key=lambda t: t[1]["metrics"]["accuracy"])
        span = best["metrics"]["accuracy"] - worst["metrics"]["accuracy"]
        spread = res.seed_spread()

        def lab(v) -> str:
            return value_label(group, v)
        text = (f"Best: {lab(best_v)} with {self.acc_f1(best)}; worst: {lab(worst_v)} with {self.acc_f1(worst)}. The "
                f"span, {pp(span).lstrip('+')}, is {'larger' if span > spread else 'not larger'} than the seed spread"
                f"{'' if span > spread else ', so this setting makes no measurable difference here'}. ")
        if failed:
            text += f"Diverged (the loss became NaN or infinite): {', '.join(lab(v) for v in failed)}. "
        if group == "loss":
            runs = dict(ok)
            mins = {v: min(c["recall"] for c in r["metrics"]["per_class"].values()) for v, r in runs.items()}
            if "ce" in runs and "weighted-ce" in runs:
                ce, wce = runs["ce"]["metrics"], runs["weighted-ce"]["metrics"]
                text += (f"Class weights change the balanced accuracy from {pct(ce['balanced_accuracy'])} (plain "
                         f"cross-entropy) to {pct(wce['balanced_accuracy'])} and the lowest per-class recall from "
                         f"{pct(mins['ce'])} to {pct(mins['weighted-ce'])}. ")
            text += ("Label smoothing softens the one-hot targets and focal loss down-weights examples that are "
                     "already classified well; both act mainly on how confident the network is, which matters little "
                     "for the arg-max decision on a data set as clean as MNIST.")
            if "balanced-softmax" in runs:
                bs = runs["balanced-softmax"]["metrics"]
                text += (f" Balanced softmax adds the log class prior to the logits during training only, so that "
                         f"the network learns scores as if the classes were balanced: balanced accuracy "
                         f"{pct(bs['balanced_accuracy'])}, lowest per-class recall {pct(mins['balanced-softmax'])}.")
        elif group == "batch":
            b = dict(ok)
            small, large = min(b), max(b)
            steps = {v: -(-b[v]["data"]["train"] // v) * b[v]["spec"]["epochs"] for v in (small, large)}
            text += (f"Smaller batches give more optimiser steps ({num(steps[small])} at batch {small} against "
                     f"{num(steps[large])} at {large}) but use the CPU less efficiently: an epoch takes "
                     f"{secs(b[small]['seconds_per_epoch'])} at batch {small} and {secs(b[large]['seconds_per_epoch'])} at "
                     f"{large}. " + ("With this short epoch budget the extra steps of small batches pay off."
                                     if best_v < large and b[small]["metrics"]["accuracy"] > b[large]["metrics"]["accuracy"]
                                     else "Here the extra steps do not buy accuracy."))
        elif group == "lr":
            lrs = sorted(ok, key=lambda t: t[0])
            low, high = lrs[0], lrs[-1]
            margin = max(spread, NEAR_BEST)
            best_acc = best["metrics"]["accuracy"]
            text += (f"The smallest peak rate, {low[0]:g}, reaches {pct(low[1]['metrics']['accuracy'])}"
                     + (": too small for this budget, the weights move too little. "
                        if best_acc - low[1]["metrics"]["accuracy"] > margin else ", close to the best. ")
                     + f"The largest, {high[0]:g}, reaches {pct(high[1]['metrics']['accuracy'])}"
                     + (": updates that large overshoot, which shows as a noisier validation curve in Figure "
                        f"{self.doc.figure_no + 2}. " if best_acc - high[1]["metrics"]["accuracy"] > margin else
                        ", close to the best: batch norm and the one-cycle warm-up keep even this rate stable. "))
        elif group == "epochs":
            eps = sorted(ok, key=lambda t: t[0])
            text += (f"Accuracy goes from {pct(eps[0][1]['metrics']['accuracy'])} after {plural(eps[0][0], 'epoch')} "
                     f"to {pct(eps[-1][1]['metrics']['accuracy'])} after {eps[-1][0]}, while the run time grows from "
                     f"{secs(eps[0][1]['wall_seconds'])} to {secs(eps[-1][1]['wall_seconds'])}. Each budget has its "
                     f"own one-cycle schedule, so a short run is a complete (faster-decaying) schedule, not the first "
                     f"part of a long one.")
        elif group == "fraction":
            fr = sorted(ok, key=lambda t: t[0])
            test_n = self.mr["data"]["test"]
            text += (f"With {num(fr[0][1]['data']['train'])} training images (train : test = "
                     f"{fr[0][1]['data']['train'] / test_n:.2f} : 1) the network reaches "
                     f"{pct(fr[0][1]['metrics']['accuracy'])}; with all {num(fr[-1][1]['data']['train'])} "
                     f"({fr[-1][1]['data']['train'] / test_n:.2f} : 1) {pct(fr[-1][1]['metrics']['accuracy'])}. The "
                     f"test set stays the same, so only the amount of training data changes; with the same number of "
                     f"epochs, fewer images also means fewer optimiser steps.")
        return text

    # 8 ----------------------------------------------------------------------------------------
    def s8(self) -> list:
        mr = self.mr
        batch = next(iter(mr["block_timings"].values()))["batch"]
        return self.section(SECTIONS[7], self._s8, lambda f: (
            f"The ConvDw blocks of the trained mobilenet model ({plural(mr['spec']['epochs'], 'epoch')} on "
            f"{self.data_text()}, seed {mr['spec']['seed']}), measured on one {self.hw} image with "
            f"torch.utils.flop_counter, beside a standard {self.dk}×{self.dk} convolution with the same input and "
            f"output channels and stride, with its batch norm. CPU times: median of repeated forward passes of each "
            f"block on its own input for a batch of {batch} images, measured right after training. Machine: "
            f"{self.machine_text()}. The figure took {secs(f)} to draw."))

    def _s8(self) -> list:
        d, mr = self.doc, self.mr
        story = [d.p(
            "A standard convolution with a D<sub>K</sub>×D<sub>K</sub> kernel maps M input channels to N output "
            "channels on a D<sub>F</sub>×D<sub>F</sub> output map at a cost of D<sub>K</sub>·D<sub>K</sub>·M·N·"
            "D<sub>F</sub>·D<sub>F</sub> multiply-adds. The depthwise convolution filters each channel on its own "
            "(D<sub>K</sub>·D<sub>K</sub>·M·D<sub>F</sub>·D<sub>F</sub>) and the pointwise 1×1 convolution mixes "
            "the channels (M·N·D<sub>F</sub>·D<sub>F</sub>). Their sum divided by the standard cost is "
            "<b>1/N + 1/D<sub>K</sub><super>2</super></b>: the product of kernel size and output channels is "
            "replaced by a sum.")]
        blocks = []
        for r in mr["layers"]:
            if r["standard_flops"] is None:
                continue
            parts = [p for p in mr["layers"] if p["part_of"] == r["name"]]
            key = r["name"].split()[0]
            timing = mr["block_timings"].get(key)
            blocks.append({"label": key.replace("blocks.", "b"), "M": int(r["name"].split("ConvDw ")[1].split("->")[0]),
                           "N": r["shape"][0], "Df": r["shape"][1], "flops": r["flops"], "dw": parts[0]["flops"],
                           "pw": parts[1]["flops"], "standard_flops": r["standard_flops"],
                           "ratio": r["flops"] / r["standard_flops"], "formula": r["formula"], "params": r["params"],
                           "standard_params": r["standard_params"],
                           "sep_ms": timing["separable_ms"] if timing else None,
                           "std_ms": timing["standard_ms"] if timing else None,
                           "time_ratio": timing["separable_ms"] / timing["standard_ms"] if timing else None})
        rows = [[b["label"], str(b["M"]), str(b["N"]), str(b["Df"]), f"{b['dw'] / 1e6:.3f}", f"{b['pw'] / 1e6:.3f}",
                 f"{b['standard_flops'] / 1e6:.3f}", f"{b['ratio']:.4f}", f"{b['formula']:.4f}", num(b["params"]),
                 num(b["standard_params"]), f"{b['time_ratio']:.2f}" if b["time_ratio"] else ""] for b in blocks]
        tot = {k: sum(b[k] for b in blocks) for k in ("flops", "standard_flops", "params", "standard_params", "dw", "pw")}
        sep_ms, std_ms = sum(b["sep_ms"] or 0 for b in blocks), sum(b["std_ms"] or 0 for b in blocks)
        rows.append(["all", "", "", "", f"{tot['dw'] / 1e6:.3f}", f"{tot['pw'] / 1e6:.3f}",
                     f"{tot['standard_flops'] / 1e6:.3f}", f"{tot['flops'] / tot['standard_flops']:.4f}", "",
                     num(tot["params"]), num(tot["standard_params"]), f"{sep_ms / std_ms:.2f}" if std_ms else ""])
        story += d.table(d.next_table(), "Each ConvDw block of mobilenet against a standard convolution in its place. "
                                         "M, N: input and output channels; D<sub>F</sub>: output map side. FLOPs in "
                                         "millions per image; ratio = (depthwise + pointwise) / standard, beside the "
                                         "formula; parameters include batch norm; time = separable / standard CPU "
                                         "time.",
                         ["block", "M", "N", "D<sub>F</sub>", "depth-<br/>wise", "point-<br/>wise", "standard",
                          "ratio", "1/N +<br/>1/D<sub>K</sub><super>2</super>", "separable", "standard", "time"],
                         rows, widths=[0.08, 0.06, 0.06, 0.05, 0.09, 0.09, 0.1, 0.08, 0.09, 0.11, 0.1, 0.09],
                         bold_rows=(len(rows) - 1,),
                         groups=[("", 4), ("MFLOPs per image", 3), ("FLOPs ratio", 2), ("parameters", 2), ("", 1)])
        path = d.render("s8_blocks", lambda make: plot_block_costs(make, blocks))
        story.append(d.figure(d.next_figure(), path, "Left: FLOPs of each ConvDw block and of a standard convolution "
                                                     "in its place. Right: the measured FLOPs ratio against the formula, "
                                                     "and the measured CPU-time ratio."))
        gap = max(abs(b["ratio"] - b["formula"]) for b in blocks)
        story.append(d.p(
            f"<b>FLOPs follow the formula{' exactly' if gap < 1e-9 else ''}.</b> For every block the measured ratio "
            f"equals 1/N + 1/D<sub>K</sub><super>2</super> (largest difference {gap:.1e}), from "
            f"{max(b['ratio'] for b in blocks):.4f} at N = {min(b['N'] for b in blocks)} to "
            f"{min(b['ratio'] for b in blocks):.4f} at N = {max(b['N'] for b in blocks)}: with "
            f"{self.dk}×{self.dk} kernels the saving approaches {self.dk * self.dk}× as N grows. Over all blocks the "
            f"separable layers need {mflops(tot['flops'])} instead of {mflops(tot['standard_flops'])} "
            f"({ratio(tot['standard_flops'], tot['flops'])} fewer), {pct(tot['pw'] / tot['flops'], 1)} of it in the "
            f"pointwise convolutions, and {num(tot['params'])} parameters instead of {num(tot['standard_params'])}."))
        sv = mr.get("standard_variant", {})
        if sv:
            story.append(d.p(
                f"<b>The whole network.</b> mobilenet with standard convolutions in place of its ConvDw blocks would "
                f"need {mflops(sv['flops'])} per image, {ratio(sv['flops'], mr['flops'])} the {mflops(mr['flops'])} of "
                f"mobilenet, and {num(sv['parameters'])} parameters ({ratio(sv['parameters'], mr['parameters'])}). Its "
                f"measured single-image latency is {ms(sv['latency']['median_ms'])} against "
                f"{ms(mr['latency']['median_ms'])}: {ratio(sv['latency']['median_ms'], mr['latency']['median_ms'])} "
                f"the time for {ratio(sv['flops'], mr['flops'])} the FLOPs."))
        if std_ms:
            time_list = ", ".join(f"{b['time_ratio']:.2f}" for b in blocks)
            flop_lo, flop_hi = min(b["ratio"] for b in blocks), max(b["ratio"] for b in blocks)
            story.append(d.p(
                f"<b>Time {'does not follow' if sep_ms / std_ms > 1.5 * tot['flops'] / tot['standard_flops'] else 'roughly follows'} "
                f"the formula.</b> Block by block the separable layers take {time_list} of the standard convolution's "
                f"CPU time, where the FLOPs ratio is {flop_lo:.3f} to {flop_hi:.3f}. A depthwise "
                f"{self.dk}×{self.dk} convolution performs {self.dk * self.dk} multiply-adds per input value and cannot "
                f"reuse that value across output channels, so it runs far below the CPU's arithmetic peak; the "
                f"separable block also runs two convolutions, two batch norms and two ReLUs instead of one each. The "
                f"saving in FLOPs is real, but on this CPU only part of it becomes speed."))
        self.findings["s8"] = (blocks, tot, sv, sep_ms, std_ms)
        return story

    # 9 ----------------------------------------------------------------------------------------
    def s9(self) -> list:
        ways = ["none", ("a class-weighted loss (weights inversely proportional to class frequency; the same run as "
                "weighted-ce in Section 7)"), "a sampler that draws every class equally often, with replacement"]
        if "balanced-softmax" in dict(self.res.group("balance")):
            ways.append("balanced softmax (the log class prior added to the logits in training; the same run as in "
                        "Section 7)")
        return self.section(SECTIONS[8], self._s9, lambda f: self.sweep_setup(
            ("balance",), f"Only the imbalance handling changes: {'; '.join(ways)}. ", f))

    def _s9(self) -> list:
        from scipy.stats import spearmanr
        d, res, names = self.doc, self.res, self.res.names
        s = res.splits
        counts, vc, tc = s.class_counts("train"), s.class_counts("val"), s.class_counts("test")
        order = np.argsort(-np.asarray(counts), kind="stable")
        big, small = names[order[0]], names[order[-1]]
        rows = [[names[i], num(counts[i]), pct(counts[i] / sum(counts), 1), num(vc[i]), num(tc[i])] for i in order]
        rows.append(["all", num(sum(counts)), pct(1, 0), num(sum(vc)), num(sum(tc))])
        story = d.table(d.next_table(), f"Images per class, from the most to the least frequent in training. Largest / "
                                        f"smallest training class: {ratio(max(counts), min(counts))}; the test set "
                                        f"keeps MNIST's natural distribution.",
                        ["class", "training", "share", "validation", "test"], rows,
                        widths=[0.12, 0.16, 0.12, 0.16, 0.16], bold_rows=(len(rows) - 1,))
        runs = dict(res.ok("balance"))
        labels = BALANCE_LABELS
        recalls = {labels.get(v, v): [r["metrics"]["per_class"][n]["recall"] for n in names] for v, r in runs.items()}
        main_loss = self.mr["spec"]["loss"]
        main_label = (f"main model: {LOSS_NAMES.get(main_loss, main_loss)}, {plural(self.mr['spec']['epochs'], 'epoch')}"
                      + (", weight average" if self.mr["spec"].get("average_decay") else "")
                      + (", elastic" if self.mr["spec"].get("elastic") else ""))
        recalls[main_label] = [self.mr["metrics"]["per_class"][n]["recall"] for n in names]
        rows2 = [[names[i], num(counts[i])] + [pct(rec[i]) for rec in recalls.values()] for i in order]
        all_runs = list(runs.values()) + [self.mr]
        for what, key in (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"), ("macro F1", "f1_macro")):
            rows2.append([what, ""] + [pct(r["metrics"][key]) if key != "f1_macro" else f"{r['metrics'][key]:.4f}"
                                       for r in all_runs])
        story += d.table(d.next_table(), f"Per-class test recall under each imbalance handling (sweep runs, "
                                         f"{plural(res.plan.epochs_sweep, 'epoch')}), with the main mobilenet model "
                                         f"for comparison.", ["class", "training images"] + list(recalls), rows2,
                         widths=[0.16, 0.12] + [0.72 / len(recalls)] * len(recalls), bold_rows=(len(order),))
        figures = []
        path = d.render("s9_imbalance", lambda make: plot_imbalance(make, counts, names, recalls))
        figures.append(d.figure(d.next_figure(), path, "Left: training images per class. Right: test recall per "
                                                       "class under each imbalance handling, classes from the most "
                                                       "to the least frequent."))
        m = res.main["mobilenet"]
        path = d.render("s9_per_class", lambda make: viz.plot_per_class(make, m["result"]["metrics"], names,
                                                                        viz.training_class_counts(m["net"], s)))
        figures.append(d.figure(d.next_figure(), path, "Precision, recall and F1 per class of the main mobilenet "
                                                       "model beside the training class counts."))
        base = runs["none"]["metrics"]
        rec_none = [base["per_class"][n]["recall"] for n in names]
        rho = float(spearmanr(counts, rec_none).statistic) if len(set(rec_none)) > 1 else float("nan")
        text = (f"Figure {d.figure_no - 1} shows the per-class recall of Table {d.table_no} as bars, Figure "
                f"{d.figure_no} the main model's per-class scores. "
                f"The largest class ({big}) has {ratio(max(counts), min(counts))} the training images of the smallest "
                f"({small}). Without any handling, class {small} reaches a recall of "
                f"{pct(base['per_class'][small]['recall'])} and class {big} {pct(base['per_class'][big]['recall'])}; "
                f"the rank correlation between a class's training count and its recall is ρ = {rho:.2f} (Spearman; "
                f"{'more training images go with higher recall' if rho > 0.3 else 'fewer training images go with higher recall' if rho < -0.3 else 'little relation'}). ")
        for v in [v for v in runs if v != "none"]:
            if v in runs:
                mv = runs[v]["metrics"]
                text += (f"The {labels.get(v, v)} changes the balanced accuracy by "
                         f"{pp(mv['balanced_accuracy'] - base['balanced_accuracy'])}, macro F1 by "
                         f"{mv['f1_macro'] - base['f1_macro']:+.4f}, accuracy by {pp(mv['accuracy'] - base['accuracy'])}, "
                         f"and for class {small} the recall by "
                         f"{pp(mv['per_class'][small]['recall'] - base['per_class'][small]['recall'])} and the precision "
                         f"by {pp(mv['per_class'][small]['precision'] - base['per_class'][small]['precision'])}. ")
        text += (f"For scale, the seed spread of the baseline is {pp(res.seed_spread()).lstrip('+')}. Each method "
                 f"makes the rare classes weigh more in training (through loss weights, sampling or shifted logits), "
                 f"which widens the region of input space assigned to them: their recall tends to rise and their "
                 f"precision to fall.")
        story.append(d.p(text))  # before the figures, so that it can fill the page the tables leave
        story += figures
        self.findings["s9"] = (runs, base, small, big, rho)
        return story

    # 10 ---------------------------------------------------------------------------------------
    def s10(self) -> list:
        total = sum(r.get("wall_seconds", 0.0) for r in self.res.results.values())
        return self.section(SECTIONS[9], self._s10, lambda f: (
            f"Drawn from the {len(self.res.results)} runs above ({duration(total)} of training and evaluation; "
            f"machine: {self.machine_text()}); every number is quoted from the section named in brackets."))

    def _s10(self) -> list:
        d, res, mr, cr = self.doc, self.res, self.mr, self.cr
        mm, cm_ = mr["metrics"], cr["metrics"]
        best, cheapest, worst = self.findings["s2"]
        blocks, _tot, _sv, sep_ms, std_ms = self.findings["s8"]
        runs, base, small, _big, _rho = self.findings["s9"]
        sil = self.findings["s6"]
        spread = res.seed_spread()
        lr_best = max(res.ok("lr"), key=lambda t: t[1]["metrics"]["accuracy"])
        ep = sorted(res.ok("epochs"), key=lambda t: t[0])
        loss_best = max(res.ok("loss"), key=lambda t: t[1]["metrics"]["f1_macro"])
        diff = mm["accuracy"] - cm_["accuracy"]
        lat_ratio = cr["latency"]["median_ms"] / mr["latency"]["median_ms"]
        flop_ratio = cr["flops"] / mr["flops"]
        counts = res.splits.class_counts("train")
        first = ("MobileNet blocks cost less and lose nothing." if diff >= -spread else
                 "MobileNet blocks cost less but lose some accuracy.")
        claims = [
            (f"<b>{first}</b> The MobileNet-block network reaches {pct(mm['accuracy'])} test accuracy (macro F1 "
            f"{mm['f1_macro']:.4f}) against {pct(cm_['accuracy'])} ({cm_['f1_macro']:.4f}) for the plain conv4, a "
            f"difference of {pp(diff)} against a seed spread of {pp(spread).lstrip('+')}, with "
            f"{ratio(cr['flops'], mr['flops'])} fewer FLOPs and {ratio(cr['parameters'], mr['parameters'])} fewer "
            f"parameters (Sections 1 and 7)."),
            f"<b>{'FLOPs are not time.' if lat_ratio < 0.67 * flop_ratio else 'FLOPs and time agree.'}</b> The FLOPs "
            f"ratio of each ConvDw block equals 1/N + 1/D<sub>K</sub><super>2</super> ({min(b['ratio'] for b in blocks):.4f} "
            f"to {max(b['ratio'] for b in blocks):.4f}), yet "
            + (f"the blocks take {sep_ms / std_ms:.2f} of a standard convolution's CPU time, and " if std_ms else "")
            + f"conv4's latency is {ratio(cr['latency']['median_ms'], mr['latency']['median_ms'])} mobilenet's for "
              f"{ratio(cr['flops'], mr['flops'])} the FLOPs (Sections 1 and 8).",
            f"<b>Block counts.</b> The best grid configuration is {best['conv']} conv + {best['mob']} MobileNet blocks "
            f"({pct(best['acc'])}), the worst {worst['conv']} conv + {worst['mob']} MobileNet ({pct(worst['acc'])})"
            + (f"; {cheapest['conv']} conv + {cheapest['mob']} MobileNet comes within "
               f"{pp(best['acc'] - cheapest['acc']).lstrip('+')} of the best with "
               f"{ratio(cheapest['flops'], best['flops'])} of its FLOPs" if cheapest is not best else "")
            + " (Section 2).",
            (f"<b>Training settings.</b> The best peak learning rate is {lr_best[0]:g} "
            f"({pct(lr_best[1]['metrics']['accuracy'])}); accuracy grows from {pct(ep[0][1]['metrics']['accuracy'])} "
            f"after {plural(ep[0][0], 'epoch')} to {pct(ep[-1][1]['metrics']['accuracy'])} after {ep[-1][0]}; the loss "
            f"with the highest macro F1 is {loss_best[0]} ({loss_best[1]['metrics']['f1_macro']:.4f}) (Section 7)."),
            f"<b>Imbalance.</b> With {ratio(max(counts), min(counts))} between the largest and the smallest class, "
            f"the rarest class ({small}) has a recall of {pct(base['per_class'][small]['recall'])} without handling"
            + "".join(f"; the {BALANCE_LABELS.get(v, v)} gives "
                      f"{pct(runs[v]['metrics']['per_class'][small]['recall'])} and a balanced accuracy of "
                      f"{pct(runs[v]['metrics']['balanced_accuracy'])} (against {pct(base['balanced_accuracy'])})"
                      for v in runs if v != "none") + " (Section 9).",
            (f"<b>Features.</b> The penultimate features separate the classes with a silhouette of "
            f"{sil['mobilenet']:.3f} with MobileNet blocks and {sil['conv4']:.3f} without (Section 6)."),
        ]
        story = d.bullets(claims)
        story.append(self.h2("10.1 What I learned"))
        story.append(d.p(
            f"Factorising a convolution into a per-channel spatial filter and a 1×1 channel mixer changed accuracy by "
            f"{pp(diff)} here while cutting FLOPs by {ratio(cr['flops'], mr['flops'])}, and the saving per layer is "
            f"exactly what the formula predicts. Measuring rather than assuming was the most useful habit: parameters "
            f"({ratio(cr['parameters'], mr['parameters'])}), FLOPs ({ratio(cr['flops'], mr['flops'])}), latency "
            f"({ratio(cr['latency']['median_ms'], mr['latency']['median_ms'])}) and training time per epoch "
            f"({ratio(cr['seconds_per_epoch'], mr['seconds_per_epoch'])}) of conv4 relative to mobilenet tell four "
            f"different stories. On imbalanced data, macro F1 and balanced accuracy, not accuracy, show what happens "
            f"to the rare classes, and repeating a run with {plural(len(res.ok('seed')), 'seed')} "
            f"(spread {pp(spread).lstrip('+')}) is needed before a difference between two settings can be trusted."))
        story.append(self.h2("10.2 Something interesting"))
        story.append(d.p(
            f"On this CPU, the network with {ratio(cr['flops'], mr['flops'])} the FLOPs is "
            + (f"only {ratio(cr['latency']['median_ms'], mr['latency']['median_ms'])} slower per image"
               if lat_ratio > 1 else
               f"even faster per image ({ms(cr['latency']['median_ms'])} against {ms(mr['latency']['median_ms'])})")
            + ". The efficiency MobileNet promises is an efficiency in arithmetic; it becomes speed only on hardware "
              "and kernels that handle depthwise convolutions well, which is why Section 8 measures time beside "
              "FLOPs, block by block."))
        return story

    # appendix ---------------------------------------------------------------------------------
    def appendix(self) -> list:
        d, res = self.doc, self.res
        story = [d.heading("Appendix A. Every run", 0)]
        story.append(d.p(f"All {len(res.results)} runs in plan order, with the groups they belong to. Each run's "
                         f"result.json (metrics, history, timings) and model.pt are stored under runs/&lt;name&gt;/. "
                         f"The figures of this report took {secs(d.render_seconds)} to draw."))
        rows = []
        for k, spec in enumerate(res.plan.runs, 1):
            r = res.results[spec.name]
            ok = r["status"] == "ok"
            rows.append([str(k), escape(spec.name.removesuffix("-adamw")),
                         ", ".join(GROUP_TITLES[g] for g in res.plan.groups_of(spec.name)),
                         num(r["data"]["train"]), pct(r["metrics"]["accuracy"]) if ok else r["status"],
                         f"{r['metrics']['f1_macro']:.4f}" if ok else "",
                         secs(r["seconds_per_epoch"]) if ok else "", secs(r.get("wall_seconds", 0))])
        story += d.table(d.next_table(), "Every run: its name (c: conv blocks, m: MobileNet blocks, e: epochs, lr: peak "
                                         "learning rate, b: batch size, loss, imbalance handling, f: training "
                                         "fraction, s: seed, then the optimiser, left out where adamw ends the name; avg: "
                                         "weight-average decay, el: elastic distortion in pixels, er: erased share, "
                                         "sh: shear in degrees), groups, training images, "
                                         "test accuracy, macro F1, time per epoch and run time.",
                         ["#", "run", "groups", "train", "accuracy", "macro F1", "s / epoch", "time"], rows,
                         widths=[0.04, 0.33, 0.2, 0.09, 0.1, 0.08, 0.08, 0.08], left_cols=3)
        return story
