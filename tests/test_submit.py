"""The submission packager: the zip's layout, the rule table, and the grader's command run on the unpacked zip."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from mobilenet_lab.submit import Names, check_names, main, rename_in_text, run_grader
from test_predict import untrained_model  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent
ENTRY = "FirstName_RollNumber_02_02.py"
NAMES = Names("Ali", "21L-1234")
FOLDER = "Ali_21L-1234_02_02"
README = f"""How to run
Train:    python {ENTRY} --data ./mnist --train
Evaluate: python {ENTRY}
Submit the zip as FirstName_RollNumber_02_02.zip.
"""


def make_tree(root: Path, model: Path | None) -> Path:
    """A compliant project (a copy of this one's code, a dummy report, a small saved model),
    plus the clutter a real project folder has: caches, runs, a dataset, bytecode."""
    root.mkdir(parents=True)
    shutil.copytree(ROOT / "mobilenet_lab", root / "mobilenet_lab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / ENTRY, root / ENTRY)
    shutil.copy(ROOT / "requirements.txt", root / "requirements.txt")
    (root / "Report.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n")
    (root / "Readme.txt").write_text(README)
    if model is not None:
        (root / "saved_models").mkdir()
        shutil.copy(model, root / "saved_models" / "mobilenet.pt")
        shutil.copy(model, root / "saved_models" / "conv4.pt")
    for junk in ("mobilenet_lab/__pycache__/model.cpython-311.pyc", "runs/20260101-mobilenet/metrics.json",
                 "mnist/train.zip", "mnist/test.zip", ".pytest_cache/v/cache", "tests/test_x.py",
                 "saved_models/.mobilenet.pt.123.tmp", "mobilenet_lab/notes.ipynb", "saved_models/data.csv"):
        path = root / junk
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"junk")
    return root


def table(out: str) -> dict[str, str]:
    """Rule -> PASS/FAIL/SKIP from the printed table."""
    rows = {}
    for line in out.splitlines():
        for result in (" PASS ", " FAIL ", " SKIP "):
            if result in line:
                rows[line.split(result)[0].strip()] = result.strip()
    return rows


def test_names():
    assert check_names(" Ali ", "21L-1234") == NAMES
    assert (NAMES.folder, NAMES.zip_name, NAMES.entry) == (FOLDER, f"{FOLDER}.zip", "21L-1234_02_02.py")
    for first, roll, message in (("FirstName", "1", "first name"), ("Ali", "RollNumber", "roll number"),
                                 ("Ali Khan", "1", "first name alone"), ("Ali", "21_L", "no spaces or underscores"),
                                 ("", "1", "first name"), ("Ali", "a/b", "letters, digits")):
        with pytest.raises(Exception, match=message):
            check_names(first, roll)


def test_rename_in_text():
    text = ("python FirstName_RollNumber_02_02.py --train\nold: python Ali_99_02_02.py\n"
            "zip: FirstName_RollNumber_02_02.zip, folder FirstName_RollNumber_02_02/\nkeep: mobilenet.pt, 02_02")
    assert rename_in_text(text, ENTRY, NAMES) == (
        "python 21L-1234_02_02.py --train\nold: python 21L-1234_02_02.py\n"
        f"zip: {FOLDER}.zip, folder {FOLDER}/\nkeep: mobilenet.pt, 02_02")


def test_builds_a_compliant_zip_that_runs_as_shipped(tmp_path, untrained_model, capsys):  # noqa: F811
    root = make_tree(tmp_path / "project", untrained_model)
    out_dir = tmp_path / "out"
    assert main(["--root", str(root), "--out", str(out_dir), "--name", "Ali", "--roll-number", "21L-1234"]) == 0
    out = capsys.readouterr().out

    zip_path = out_dir / f"{FOLDER}.zip"
    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        readme = zf.read(f"{FOLDER}/Readme.txt").decode()
        entry = zf.read(f"{FOLDER}/21L-1234_02_02.py").decode()
        student = json.loads(zf.read(f"{FOLDER}/student.json"))
    assert all(n.startswith(f"{FOLDER}/") for n in names)
    inner = {n[len(FOLDER) + 1:] for n in names}
    assert {n for n in inner if "/" not in n} == {
        "21L-1234_02_02.py", "Report.pdf", "Readme.txt", "requirements.txt", "student.json"}
    assert {"saved_models/mobilenet.pt", "saved_models/conv4.pt", "mobilenet_lab/model.py",
            "mobilenet_lab/demo_static/app.js"} <= inner
    package = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mobilenet_lab").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert package <= inner, "the whole library ships"
    for junk in ("runs/", "mnist/", ".pytest_cache", "__pycache__", ".pyc", "tests/", ".ipynb", ".csv", ".tmp"):
        assert not any(junk in n for n in inner), junk
    assert "python 21L-1234_02_02.py --data ./mnist --train" in readme and ENTRY not in readme
    assert f"{FOLDER}.zip" in readme
    assert ENTRY not in entry and "python 21L-1234_02_02.py" in entry
    assert student == {"name": "Ali", "roll_number": "21L-1234"}
    assert json.loads((root / "student.json").read_text()) == student  # what the root script prints

    rows = table(out)
    assert len(rows) == 12 and set(rows.values()) == {"PASS"}, out
    assert "runs as shipped: python 21L-1234_02_02.py" in rows
    assert "left out datasets: saved_models/data.csv" in out and "mobilenet_lab/notes.ipynb" in out
    assert "every rule passes" in out

    # student.json now holds the name: the packager needs no flags the second time.
    assert main(["--root", str(root), "--out", str(out_dir), "--skip-run"]) == 0
    assert table(capsys.readouterr().out)["runs as shipped: python 21L-1234_02_02.py"] == "SKIP"


def test_a_broken_tree_fails_with_fixes(tmp_path, capsys):
    root = make_tree(tmp_path / "project", None)
    (root / "Report.pdf").write_text("a text file, not a PDF")
    (root / "Readme.txt").unlink()
    assert main(["--root", str(root), "--name", "Ali", "--roll-number", "21L-1234", "--skip-run"]) == 1
    out = capsys.readouterr().out
    rows = table(out)
    assert rows["Report.pdf in the root folder"] == "FAIL"
    assert rows["Readme.txt explains how to run the code"] == "FAIL"
    assert rows["a folder with the saved models"] == "FAIL"
    assert rows["zip named FirstName_RollNumber_02_02.zip"] == "PASS"
    assert out.count("fix: ") == 3 and "Report.pdf" in out and "--train --model saved_models/mobilenet.pt" in out
    assert "3 of 12 rules fail" in out and "not ready to submit" in out
    assert (root / f"{FOLDER}.zip").is_file()  # default --out: the project folder


def test_check_a_hand_made_zip(tmp_path, capsys):
    bad = tmp_path / "submission.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("Ali_21L-1234/main.py", "print('hi')\n")
        zf.writestr("Ali_21L-1234/helper.py", "\n")
        zf.writestr("Ali_21L-1234/report.docx", "x")
        zf.writestr("Ali_21L-1234/Readme.txt", "python Ali_21L-1234_02_02.py\n")
        zf.writestr("Ali_21L-1234/work.ipynb", "{}")
        zf.writestr("Ali_21L-1234/__pycache__/main.cpython-311.pyc", "x")
        zf.writestr("Ali_21L-1234/saved_models/model.pt", "not a model")
        zf.writestr("Ali_21L-1234/data/train.csv", "a,b\n")
        zf.writestr("notes.txt", "x")
    assert main(["--check", str(bad), "--name", "Ali", "--roll-number", "21L-1234", "--root", str(tmp_path),
                 "--skip-run"]) == 1
    rows = table(capsys.readouterr().out)
    assert [rule for rule, result in rows.items() if result == "PASS"] == []
    assert rows["runs as shipped: python 21L-1234_02_02.py"] == "SKIP"


def test_the_grader_run_reports_a_failure(tmp_path):
    folder = tmp_path / FOLDER
    folder.mkdir()
    (folder / NAMES.entry).write_text("import sys\nprint('Name: Ali')\nsys.exit('no saved model at saved_models')\n")
    rule = run_grader(folder, NAMES)
    assert rule.ok is False and "exit status 1" in rule.detail and "no saved model" in rule.detail
    (folder / NAMES.entry).write_text("print('hello')\n")
    rule = run_grader(folder, NAMES)
    assert rule.ok is False and "name and roll number" in rule.detail


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


def test_an_ambiguous_entry_script_is_refused(tmp_path, capsys):
    (tmp_path / "a.py").write_text("")
    (tmp_path / "b.py").write_text("")
    assert main(["--root", str(tmp_path), "--name", "Ali", "--roll-number", "1"]) == 2
    assert "cannot tell which of a.py, b.py" in capsys.readouterr().err
