"""The report: its plan is data, --quick runs the whole plan on a tiny dataset and stores every result, a second
run reuses them, and the PDF builds from stored results alone with the student's name, its hand-written text
filled in from the results by name."""
from __future__ import annotations

import contextlib
import io
import json
import re
import time
from pathlib import Path

import pytest
from pypdf import PdfReader

from mobilenet_lab.config import Config
from mobilenet_lab.errors import UserError
from mobilenet_lab.experiments import pdf, report

ROOT = Path(__file__).resolve().parent.parent
HEADINGS = ["1. Conv blocks against MobileNet blocks", "2. Number of conv blocks and MobileNet blocks",
            "3. Confusion matrices, recall and accuracy on the test set", "4. Correct and wrong predictions",
            "5. Learned filters of the last convolution layer", "6. With and without MobileNet blocks",
            "7. Loss function, batch size, learning rate, epochs and data ratio", "8. What did not work",
            "9. Limitations", "10. Conclusion"]


def run_report(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = report.main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


def pdf_text(path: Path) -> str:
    return re.sub(r"\s+", " ", " ".join(page.extract_text() for page in PdfReader(str(path)).pages))


def test_the_plan_is_data_and_shares_identical_runs():
    specs = report.plan()
    names = [s.name for s in specs]
    assert len(names) == len(set(names)) and len({s.config for s in specs}) == len(specs)
    groups = {g for s in specs for g, _ in s.groups}
    assert groups == set(report.SWEEPS) | {"grid", "recipe"}
    baseline = next(s for s in specs if s.name == "baseline")
    assert {g for g, _ in baseline.groups} == set(report.SWEEPS) | {"grid"}  # one run, in every sweep and the grid
    assert baseline.config == Config(**report.SWEEP_BASE)
    replicates = [s for s in specs if s.groups[0][0] == "recipe"]
    assert {(s.config.arch, s.config.seed) for s in replicates} == {(a, s) for a in ("mobilenet", "conv4") for s in (1, 2)}
    from mobilenet_lab.checkpoint import open_checkpoint
    for s in replicates:  # the saved models' own settings, another seed
        saved = open_checkpoint(ROOT / "saved_models" / f"{s.config.arch}.pt", "cpu").config
        assert s.config.as_dict() == dict(saved.as_dict(), seed=s.config.seed)
    assert len(specs) <= 40


def test_every_run_is_stored_with_its_figures(quick_results):
    out, stdout = quick_results
    specs = report.plan(quick=True)
    assert f"({0} stored, {len(specs)} to train)" in stdout
    for spec in specs:
        result = json.loads((out / "runs" / f"{spec.name}.json").read_text())
        assert result["format"] == report.FORMAT and result["status"] == "ok"
        assert result["config"] == spec.config.as_dict() and [tuple(g) for g in result["groups"]] == list(spec.groups)
        assert 0 <= result["metrics"]["accuracy"] <= 1 and len(result["metrics"]["confusion_matrix"]) == 10
        assert result["wall_seconds"] > 0 and len(result["history"]["epoch"]) >= 1
    for arch in ("mobilenet", "conv4"):
        main = json.loads((out / "main" / f"{arch}.json").read_text())
        assert set(main["roc"]) == {str(i) for i in range(10)} and all(len(c["fpr"]) <= 220 for c in main["roc"].values())
        assert main["history"]["epoch"] == list(range(1, 21))  # the saved model's own history
    costs = json.loads((out / "costs.json").read_text())
    assert costs["c1m6"]["flops"] < costs["c4m0"]["flops"] and costs["c1m6"]["latency"]["median_ms"] > 0
    assert all(b["flops"] < b["standard_flops"] for b in costs["c1m6"]["blocks"])
    sizes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".npz"))
    assert sizes < 4_000_000  # results are committed: a few MB at most


def test_the_pdf_builds_from_the_results_with_the_students_name(quick_results, tmp_path):
    out, _ = quick_results
    started = time.perf_counter()
    pages = pdf.build_pdf(out, tmp_path / "r.pdf", "Ada", "21L-9876")
    assert time.perf_counter() - started < 60 and pages >= 8
    reader = PdfReader(str(tmp_path / "r.pdf"))
    text = pdf_text(tmp_path / "r.pdf")
    assert "Ada" in reader.pages[0].extract_text() and "21L-9876" in reader.pages[0].extract_text()
    assert reader.metadata.author == "Ada (21L-9876)"
    assert "FirstName" not in text and "RollNumber" not in text
    for heading in HEADINGS:
        assert heading in text, heading
    bookmarks = [item.title for item in reader.outline if not isinstance(item, list)]
    assert all(heading in bookmarks for heading in HEADINGS)
    for code in (r"mobilenet_lab", r"\.py\b", r"/tmp", r"/work", r"blocks\.\d", r"torch\.utils"):
        assert not re.search(code, text), f"the report names code or a path: {code}"


def test_a_second_run_reuses_every_stored_result(quick_results):
    out, _ = quick_results
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    status, stdout, stderr = run_report("--quick", "--results", out, "--dry-run")
    assert status == 0, stderr
    assert f"({len(stamps)} stored, 0 to train)" in stdout and "to train " not in stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_missing_or_stale_run_is_trained_again_and_only_that_one(quick_results):
    out, _ = quick_results
    gone, stale = out / "runs" / "lr0.01.json", out / "runs" / "c2m2.json"
    gone.rename(gone.with_suffix(".bak"))
    original = stale.read_text()
    stale.write_text(json.dumps(dict(json.loads(original), parameters=1)))
    try:
        status, stdout, stderr = run_report("--quick", "--results", out, "--dry-run")
        assert status == 0, stderr
        assert "2 to train)" in stdout and "to train lr0.01" in stdout and "to train c2m2" in stdout
        assert "another parameter count" in stderr
    finally:
        gone.with_suffix(".bak").rename(gone)
        stale.write_text(original)


def test_only_pdf_needs_stored_results_and_another_dataset_is_refused(quick_results, tmp_path):
    status, _, stderr = run_report("--only-pdf", "--results", tmp_path / "empty")
    assert status == 2 and "run without --only-pdf first" in stderr and "Traceback" not in stderr
    from helpers import write_dataset
    other = write_dataset(tmp_path / "other", n_train=200, n_test=60)
    status, _, stderr = run_report("--quick", "--data", other, "--results", quick_results[0], "--dry-run")
    assert status == 2 and "another dataset" in stderr


def test_a_placeholder_that_names_no_result_stops_the_build():
    known = {"mobilenet": pdf._ns(test_accuracy=0.99)}
    assert pdf.fill("{mobilenet.test_accuracy:.1%} right", known, "x.md") == "99.0% right"
    for bad in ("{mobilenet.tst_accuracy:.2%}", "{resnet.test_accuracy}"):
        with pytest.raises(UserError, match=r"x\.md: the placeholder .* names no result"):
            pdf.fill(bad, known, "x.md")


def test_every_figure_in_the_text_comes_from_the_results():
    """A number in a section file is a placeholder; the only numerals left are names (MobileNet v1, 3×3, F1)."""
    allowed = re.compile(r"\b(conv4|v1|float32|bfloat16|3×3|1×1|7×7|F1|0|1|2|3|4|5|6|7|8|9|10)\b")
    for path in sorted(pdf.TEXT.glob("*.md")):
        text = re.sub(r"\{[^}]*\}", "", path.read_text())
        text = re.sub(r"^#+ \d+\. ", "", text, flags=re.MULTILINE)  # section numbers
        text = re.sub(r"\[\[(figure|table) [\w.]+:", "", text)  # a figure's or table's name
        for number in re.findall(r"\d[\d,.]*%?", allowed.sub("", text)):
            pytest.fail(f"{path.name} types the figure {number!r}: name the result in a placeholder instead")


def test_the_committed_results_build_the_report(tmp_path):
    if not (ROOT / "results" / "plan.json").is_file():
        pytest.skip("no committed results yet")
    started = time.perf_counter()
    pages = pdf.build_pdf(ROOT / "results", tmp_path / "Report.pdf", "Ada", "21L-9876")
    assert 10 <= pages <= 14 and time.perf_counter() - started < 60
    text = pdf_text(tmp_path / "Report.pdf")
    assert all(h in text for h in HEADINGS) and "FirstName" not in text
