"""The report command: --quick runs the whole experiment plan on a tiny dataset, stores every
run's results, builds a PDF with the assignment's ten sections, and a second run reuses the
stored results instead of training again."""
from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from mobilenet_lab import report
from mobilenet_lab.recipe import DEFAULTS

pytest.importorskip("reportlab", reason="the report needs reportlab (requirements.txt)")
pypdf = pytest.importorskip("pypdf", reason="reading the PDF back needs pypdf (requirements.txt)")
from mobilenet_lab.report_pdf import SECTIONS, augmentation_phrase  # after the skips: it imports reportlab


def run_report(*args) -> tuple[int, str, str]:
    """``python -m mobilenet_lab.report ARGS`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = report.main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


def quick_plan() -> report.Plan:
    return report.build_plan(1, 1, report.QUICK_EPOCH_VALUES)


def pdf_text(path) -> str:
    reader = pypdf.PdfReader(str(path))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))


@pytest.fixture(scope="module")
def quick_run(tiny_data, tmp_path_factory):
    """One --quick run of the whole plan on the 300 + 100 digit dataset: (out folder, stdout)."""
    out = tmp_path_factory.mktemp("report")
    status, stdout, stderr = run_report("--quick", "--data", tiny_data, "--out", out)
    assert status == 0, stderr
    return out, stdout


# ---------------------------------------------------------------------------------------------
# The plan.
# ---------------------------------------------------------------------------------------------
def test_the_plan_shares_identical_runs_and_keeps_the_epoch_budget():
    plan = report.build_plan(15, 3)
    names = [s.name for s in plan.runs]
    assert len(names) == len(set(names))
    assert {g for g in plan.groups} >= {"main", "grid", "loss", "batch", "lr", "epochs", "fraction", "balance", "seed"}
    for group, members in plan.groups.items():
        assert all(name in names for _, name in members), group
    by_name = {s.name: s for s in plan.runs}
    assert [by_name[plan.member("main", a)].epochs for a in ("mobilenet", "conv4")] == [15, 15]
    sweeps = [s for s in plan.runs if s.name not in {n for _, n in plan.groups["main"]}]
    assert all(s.epochs == 3 for s in sweeps if s.name not in {n for _, n in plan.groups["epochs"]})
    assert sorted(v for v, _ in plan.groups["epochs"]) == [1, 2, 3, 5, 10]  # EPOCH_VALUES and the sweep's 3
    main_specs = [by_name[plan.member("main", a)] for a in ("mobilenet", "conv4")]
    for spec in main_specs:  # the saved models' recipe, setting by setting
        assert (spec.loss, spec.learning_rate, spec.optimizer, spec.batch_size, spec.balance) == (
            report.MAIN_LOSS, DEFAULTS["lr"], DEFAULTS["optimizer"], DEFAULTS["batch_size"], DEFAULTS["balance"])
        assert (spec.average_decay, spec.elastic, spec.erase) == (
            DEFAULTS["average_decay"], DEFAULTS["elastic"], DEFAULTS["erase"])
    # the sweep baseline is one run, shared by every sweep; class weights are one run in two groups
    baseline = plan.member("balance", "none")
    for group in ("loss", "batch", "lr", "epochs", "fraction", "seed"):
        assert baseline in {n for _, n in plan.groups[group]}, group
    assert plan.member("balance", "weighted-loss") == plan.member("loss", "weighted-ce")
    assert {"ce", "weighted-ce"} <= {v for v, _ in plan.groups["loss"]}
    assert len(plan.groups["loss"]) >= 3


# ---------------------------------------------------------------------------------------------
# A quick run: stored results, the PDF, reuse.
# ---------------------------------------------------------------------------------------------
def test_every_run_is_stored_with_its_measurements(quick_run):
    out, stdout = quick_run
    plan = quick_plan()
    assert f"runs: 0 reused, {len(plan.runs)} trained" in stdout
    assert "estimated time" in stdout and "plan ~" in stdout  # progress: which run, time left
    main = {n for _, n in plan.groups["main"]}
    for spec in plan.runs:
        folder = out / "runs" / spec.name
        result = json.loads((folder / "result.json").read_text())
        assert result["format"] == report.RESULT_FORMAT and result["status"] == "ok"
        assert result["spec"]["epochs"] == spec.epochs == len(result["history"]["epoch"])
        assert 0 <= result["metrics"]["accuracy"] <= 1 and len(result["metrics"]["confusion_matrix"]) == 10
        assert result["seconds_per_epoch"] > 0 and result["wall_seconds"] > 0
        assert result["parameters"] == report.expected_parameters(spec)
        assert result["flops"] > 0 and result["latency"]["median_ms"] > 0
        assert result["machine"]["cores"] >= 1 and result["machine"]["torch_threads"] >= 1
        assert (folder / "model.pt").is_file()
        assert not (folder / "checkpoint-last.pt").exists()  # the resumable state is gone once finished
        if spec.name in main:
            assert 0 <= result["train_accuracy"] <= 1 and result["layers"]
        if spec.name == plan.member("main", "mobilenet"):  # ConvDw blocks against standard convolutions
            assert result["standard_variant"]["flops"] > result["flops"]
            assert all(t["separable_ms"] > 0 and t["standard_ms"] > 0 for t in result["block_timings"].values())
    stored = json.loads((out / "plan.json").read_text())
    assert stored["data"]["quick"] and stored["plan"]["runs"] == [s.name for s in plan.runs]


def test_the_pdf_holds_the_ten_sections_with_figures_and_tables(quick_run):
    out, stdout = quick_run
    pdf = out / "Report.pdf"
    assert pdf.is_file() and "report: " in stdout
    reader = pypdf.PdfReader(str(pdf))
    assert len(reader.pages) >= 12
    text = pdf_text(pdf)
    for heading in SECTIONS:
        assert heading in text, heading
    assert "Contents" in text and "Experimental setup" in text and "QUICK MODE" in text
    assert text.count("Setup.") >= len(SECTIONS)  # every section states its setup
    assert "Figure 1." in text and "Table 1." in text
    assert "1/N + 1/D" in text and "torch.utils.flop_counter" in text
    bookmarks = [item.title for item in reader.outline if not isinstance(item, list)]
    assert all(heading in bookmarks for heading in SECTIONS)
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"s2_grid.png", "s6_tsne_mobilenet.png", "s6_tsne_conv4.png", "s8_blocks.png"} <= set(figures)


def test_a_second_run_reuses_every_stored_run(quick_run, tmp_path):
    out, _ = quick_run
    plan = quick_plan()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    pdf = tmp_path / "again.pdf"
    status, stdout, stderr = run_report("--quick", "--out", out, "--pdf", pdf)  # data: the stored plan's
    assert status == 0, stderr
    assert f"runs: {len(plan.runs)} reused, 0 trained" in stdout
    assert stdout.count("] reused ") == len(plan.runs) and "] training " not in stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert all(h in pdf_text(pdf) for h in SECTIONS)


def test_a_missing_or_stale_run_is_trained_again_and_only_that_one(quick_run):
    out, _ = quick_run
    plan = quick_plan()
    gone, stale = plan.runs[3], plan.runs[5]
    (out / "runs" / gone.name / "result.json").rename(out / "runs" / gone.name / "result.json.bak")
    path = out / "runs" / stale.name / "result.json"
    original = path.read_text()
    path.write_text(json.dumps(dict(json.loads(original), parameters=1)))
    try:
        status, stdout, stderr = run_report("--quick", "--out", out, "--dry-run")
        assert status == 0, stderr
        assert f"({len(plan.runs) - 2} stored, 2 to train)" in stdout
        assert f"to train {gone.name}" in stdout and f"to train {stale.name}" in stdout
        assert "architecture changed" in stderr
    finally:
        (out / "runs" / gone.name / "result.json.bak").rename(out / "runs" / gone.name / "result.json")
        path.write_text(original)


def test_an_averaged_run_from_before_the_recalibration_is_trained_again(quick_run):
    """Runs with weight averaging stored before train() re-measured the batch-norm statistics of
    the kept weights are trained again; the runs without averaging are reused."""
    out, _ = quick_run
    plan = quick_plan()
    main = plan.member("main", "mobilenet")
    path = out / "runs" / main / "result.json"
    original = path.read_text()
    record = json.loads(original)
    assert record["spec"]["average_decay"] and record["history"]["recalibrated"]
    del record["history"]["recalibrated"]
    path.write_text(json.dumps(record))
    try:
        status, stdout, stderr = run_report("--quick", "--out", out, "--dry-run")
        assert status == 0, stderr
        assert f"({len(plan.runs) - 1} stored, 1 to train)" in stdout and f"to train {main}" in stdout
        assert "re-measured" in stderr
    finally:
        path.write_text(original)


def test_only_pdf_needs_stored_runs(tmp_path):
    status, _, stderr = run_report("--only-pdf", "--out", tmp_path / "empty")
    assert status == 2 and "run without --only-pdf first" in stderr and "Traceback" not in stderr


def test_another_dataset_in_the_same_folder_is_refused(quick_run, tmp_path):
    from helpers import write_dataset
    out, _ = quick_run
    other = write_dataset(tmp_path / "other", n_train=200, n_test=60)
    status, _, stderr = run_report("--quick", "--data", other, "--out", out, "--dry-run")
    assert status == 2 and "another dataset" in stderr


def test_runs_picked_by_another_best_epoch_rule_are_refused(quick_run):
    """Runs stored before the best-epoch rule changed are not mixed with new ones."""
    out, _ = quick_run
    path = out / "plan.json"
    original = path.read_text()
    path.write_text(json.dumps({k: v for k, v in json.loads(original).items() if k != "best_epoch_rule"}))
    try:
        status, _, stderr = run_report("--quick", "--out", out, "--dry-run")
        assert status == 2 and "another rule" in stderr and "Traceback" not in stderr
    finally:
        path.write_text(original)
    status, _, stderr = run_report("--quick", "--out", out, "--dry-run")
    assert status == 0, stderr


def test_the_setup_text_states_the_augmentation_a_run_used():
    """Elastic distortion and random erasing are named with their sizes, and only when in effect."""
    from mobilenet_lab.training import ERASE_AREA
    both = augmentation_phrase({"elastic": 1.5, "erase": 0.25})
    assert "up to 1.5 pixels" in both and "in 25% of the training images" in both
    assert f"{ERASE_AREA[0]:.0%}-{ERASE_AREA[1]:.0%} of the image" in both
    assert augmentation_phrase({"elastic": 1.5, "erase": 0.25, "augment": False}) == ""
    assert augmentation_phrase({"elastic": 0, "erase": 0}) == ""


def test_the_time_estimate_uses_the_speed_measured_for_the_run():
    """measure_rates keys its figures as estimate_seconds looks them up (augmentation included)."""
    spec = quick_plan().runs[0]
    rates = report.measure_rates([spec], "cpu", steps=1)
    assert set(rates) == {report.rate_key(spec)} and all(rate > 0 for rate in rates.values())
    sizes = {"train": 1000, "val": 100, "test": 100}
    at = {report.rate_key(spec): 10.0}
    expected = spec.epochs * round(1000 * spec.train_fraction) / 10.0
    assert report.estimate_seconds(spec, sizes, 2, at) == pytest.approx(expected, rel=0.2)
