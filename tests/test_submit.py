"""The submission packager: the zip's tree, the generated one-file program run as a grader runs it, the rule
table on compliant and broken zips, and a top-level name defined twice."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mobilenet_lab.tools.submit import Names, check_names, main, run_as_grader, single_file

ROOT = Path(__file__).resolve().parent.parent
NAMES = Names("Ali", "21L-1234")
FOLDER = "Ali_21L-1234_02_02"
ENTRY = "21L-1234_02_02.py"


def table(out: str) -> dict[str, str]:
    """Rule -> PASS/FAIL/SKIP from the printed table."""
    rows = {}
    for line in out.splitlines():
        for result in (" PASS ", " FAIL ", " SKIP "):
            if result in line:
                rows[line.split(result)[0].strip()] = result.strip()
    return rows


def project(tmp_path: Path, results: Path) -> Path:
    """A copy of this project (code, root script, saved models) with the quick run's results."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "mobilenet_lab", root / "mobilenet_lab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "saved_models", root / "saved_models")
    shutil.copytree(results, root / "results")
    shutil.copy(ROOT / "FirstName_RollNumber_02_02.py", root)
    for junk in ("runs/x/metrics.json", "mnist/train.zip", "notes.ipynb"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk")
    return root


@pytest.fixture(scope="module")
def built(quick_results, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("submit")
    root = project(tmp, quick_results[0])
    out = tmp / "out"
    import contextlib
    import io
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["--root", str(root), "--out", str(out), "--name", "Ali", "--roll-number", "21L-1234"])
    return status, stdout.getvalue(), out / f"{FOLDER}.zip", root


def test_names():
    assert check_names(" Ali ", "21L-1234") == NAMES
    assert (NAMES.folder, NAMES.zip_name, NAMES.entry) == (FOLDER, f"{FOLDER}.zip", ENTRY)
    for first, roll, message in (("FirstName", "1", "first name"), ("Ali", "RollNumber", "roll number"),
                                 ("Ali Khan", "1", "first name alone"), ("Ali", "21_L", "no spaces or underscores")):
        with pytest.raises(Exception, match=message):
            check_names(first, roll)


def test_the_zip_holds_exactly_four_entries_and_every_rule_passes(built):
    status, out, zip_path, _ = built
    assert status == 0, out
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        readme = zf.read(f"{FOLDER}/Readme.txt").decode()
    names = [i.filename for i in infos]
    assert all(n.startswith(f"{FOLDER}/") for n in names)
    assert {n.split("/")[1] for n in names if n.count("/") >= 1 and n.split("/")[1]} == {
        ENTRY, "Report.pdf", "Readme.txt", "saved_models"}
    assert sorted(n for n in names if n.startswith(f"{FOLDER}/saved_models/") and n.endswith(".pt")) == [
        f"{FOLDER}/saved_models/conv4.pt", f"{FOLDER}/saved_models/mobilenet.pt"]
    assert all((i.external_attr >> 16) & 0o777 == 0o644 for i in infos if not i.is_dir())
    assert "pip install torch==" in readme and f"python {ENTRY} --arch conv4" in readme and "pytest" not in readme
    import json
    scored = json.loads((built[3] / "results" / "runs" / "mobilenet.json").read_text())["metrics"]["accuracy"]
    assert f"test accuracy {scored:.4f}" in readme  # what the report's run that trained the model scored
    rows = table(out)
    assert set(rows.values()) == {"PASS"} and len(rows) == 17, out
    assert f"python {ENTRY}: evaluates the saved model" in rows
    assert "every rule passes" in out


def test_the_one_file_defines_the_assignments_functions_and_runs_alone(built, tmp_path):
    _, _, zip_path, _ = built
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / FOLDER
    code = (folder / ENTRY).read_text()
    marked = ("class MnistCsvDataset", "class ConvDw", "def init_network", "def train", "def save", "def load",
              "def test", "def visualize", "def main", "# Helpers")
    at = [code.index(f"\n{name}" + ("(" if name != "# Helpers" else "")) for name in marked]  # not load_splits
    assert at == sorted(at), "the parts are not in the assignment's order"
    lines = code.splitlines()
    assert len(lines) <= 2000 and lines[2].startswith("Where each part the assignment marks is")
    for name in marked[:-1]:  # the contents table gives each part's line
        number = int(re.search(rf"{name.split()[1]} \(line (\d+)\)", code).group(1))
        assert lines[number - 1].startswith(name), name
    assert "import mobilenet_lab" not in code and "from ." not in code and "mobilenet_lab/" not in code
    assert code.count('"""The student whose work this is."""') == 1 and "FirstName" not in code
    assert not re.search(r"(?<![\w.])(exec|eval|compile)\(", code)  # no code hidden in strings (re.compile is fine)
    rules = run_as_grader(folder, NAMES)
    assert all(r.ok for r in rules), [(r.rule, r.detail) for r in rules]
    assert "test accuracy 0.99" in rules[1].detail  # the saved model on the embedded sample
    done = subprocess.run([sys.executable, "-I", ENTRY, "--data", str(tmp_path / "nowhere")], cwd=folder,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: dataset path") and "Traceback" not in done.stderr


@pytest.mark.parametrize("breakage, rule", [
    ("rename-zip", "zip named FirstName_RollNumber_02_02.zip"),
    ("extra-entry", "exactly four root entries: the .py, Report.pdf, Readme.txt, saved_models/"),
    ("second-script", "one Python file in the root folder"),
    ("notebook", "code in .py files only, no notebooks"),
    ("placeholder-report", "Report.pdf carries your name and roll number"),
    ("dataset", "no datasets (images, IDX files, label CSVs)"),
    ("private-mode", "every file readable by anyone (mode 0644)"),
    ("no-models", "a folder with the saved models"),
])
def test_check_finds_each_broken_rule(built, tmp_path, capsys, breakage, rule):
    _, _, good, _ = built
    target = tmp_path / (good.name if breakage != "rename-zip" else "submission.zip")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if breakage == "no-models" and "/saved_models/" in info.filename:
                continue
            if breakage == "placeholder-report" and info.filename.endswith("Report.pdf"):
                data = (ROOT / "Report.pdf").read_bytes() if (ROOT / "Report.pdf").is_file() else b"%PDF-1.4 FirstName"
            if breakage == "private-mode" and info.filename.endswith(".py"):
                info.external_attr = 0o100600 << 16
            dst.writestr(info, data)
        extra = {"extra-entry": ("requirements.txt", b"torch\n"), "second-script": ("helper.py", b"\n"),
                 "notebook": ("saved_models/work.ipynb", b"{}"), "dataset": ("saved_models/train.csv", b"a,b\n")}
        if breakage in extra:
            info = zipfile.ZipInfo(f"{FOLDER}/{extra[breakage][0]}")
            info.external_attr = 0o100644 << 16  # a plain writestr(name) would make it 0600, a rule of its own
            dst.writestr(info, extra[breakage][1])
    assert main(["--check", str(target), "--name", "Ali", "--roll-number", "21L-1234"]) == 1
    rows = table(capsys.readouterr().out)
    assert rows[rule] == "FAIL"
    assert sum(result == "FAIL" for result in rows.values()) <= 2  # one rule broken (the extra entry breaks two)


def test_packaging_fails_on_a_name_defined_twice(tmp_path):
    root = tmp_path / "project"
    shutil.copytree(ROOT / "mobilenet_lab", root / "mobilenet_lab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "FirstName_RollNumber_02_02.py", root)
    (root / "mobilenet_lab" / "recipe.py").write_text((root / "mobilenet_lab" / "recipe.py").read_text()
                                                      + "\n\ndef evaluate():\n    pass\n")
    with pytest.raises(Exception, match="define the same top-level name 'evaluate'"):
        single_file(NAMES, root)


@pytest.mark.parametrize("args, message", [
    ([], "give your first name"),
    (["--name", "Ali Khan", "--roll-number", "1"], "first name alone"),
    (["--name", "Ali", "--roll-number", "1", "--root", "{tmp}/none"], "is not a folder"),
    (["--name", "Ali", "--roll-number", "1", "--check", "{tmp}/none.zip"], "does not exist"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--root" not in argv:
        argv += ["--root", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
