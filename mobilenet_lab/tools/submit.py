"""Build the submission zip and check it against every rule of the assignment's guidelines.

    python -m mobilenet_lab.submit --name FIRST --roll-number ROLL [--root DIR] [--out DIR] [--skip-run]

Builds ``FIRST_ROLL_02_02.zip`` whose one root folder ``FIRST_ROLL_02_02/`` holds the entry
script renamed ``ROLL_02_02.py`` (it and Readme.txt rewritten to use that name), the
``mobilenet_lab`` library, Report.pdf, Readme.txt, the saved models, requirements.txt and
student.json (the name and roll number the script prints). Datasets, caches, run folders,
notebooks and bytecode are never shipped.

It then reads the zip back, checks each naming rule (each broken one costs 3% of the
marks), unpacks it into a temporary folder and runs the grader's command there
(``python ROLL_02_02.py``: evaluate the saved model on the embedded sample data), and
prints a table of every rule, PASS or FAIL, with the fix. Exit status 0 when every rule
passes, 1 when one fails, 2 on bad input. ``--check ZIP`` checks a zip made otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import UserError, run_cli
from .student import PLACEHOLDER, identity

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(__file__).resolve().parent.name       # the library folder shipped: mobilenet_lab
SUFFIX = "_02_02"
MODELS_DIR = "saved_models"
GRADER_MODEL = f"{MODELS_DIR}/mobilenet.pt"          # what the grader's command loads by default
REPORT, README, STUDENT_FILE = "Report.pdf", "Readme.txt", "student.json"
EXTRA_FILES = ("requirements.txt",)                  # shipped from the root when present
DATA_SUFFIXES = (".zip", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".7z", ".rar", ".csv", ".tsv", ".npy", ".npz",
                 ".idx", ".ubyte", ".h5", ".hdf5", ".parquet", ".pkl", ".pickle")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGE_FOLDER_LIMIT = 10      # a folder with this many pictures is a dataset
JUNK_PARTS = ("__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".cache", "runs", "__MACOSX", ".git")
JUNK_SUFFIXES = (".pyc", ".pyo", ".tmp", ".log")
GRADER_TIMEOUT_S = 900


@dataclass(frozen=True)
class Names:
    """The student's first name and roll number, and the names the guidelines derive from them."""
    first: str
    roll: str

    @property
    def folder(self) -> str:
        return f"{self.first}_{self.roll}{SUFFIX}"

    @property
    def zip_name(self) -> str:
        return f"{self.folder}.zip"

    @property
    def entry(self) -> str:
        return f"{self.roll}{SUFFIX}.py"


@dataclass
class Rule:
    """One convention of the guidelines and how the submission fares: ok True (PASS), False
    (FAIL) or None (not checked); ``detail`` says what was found, ``fix`` what to do."""
    rule: str
    ok: bool | None
    detail: str = ""
    fix: str = ""


def check_names(first: str, roll: str) -> Names:
    """Validate the name and roll number that go into file names.

    Args:
        first: the student's first name.
        roll: the roll number.

    Raises:
        UserError: placeholders, empty values, or characters that do not belong in the names.
    """
    first, roll = first.strip(), roll.strip()
    if not first or first == PLACEHOLDER["name"]:
        raise UserError("give your first name with --name FIRST (the zip is named FIRST_ROLL_02_02.zip)")
    if not roll or roll == PLACEHOLDER["roll_number"]:
        raise UserError("give your roll number with --roll-number ROLL (the script is named ROLL_02_02.py)")
    if not all(c.isalpha() or c == "-" for c in first) or not first[0].isalpha():
        raise UserError(f"--name '{first}' must be your first name alone: letters (and hyphens) only, "
                        f"no spaces or underscores")
    if not all(c.isascii() and (c.isalnum() or c == "-") for c in roll):
        raise UserError(f"--roll-number '{roll}' must be letters, digits and hyphens only, no spaces or underscores")
    return Names(first, roll)


# ---------------------------------------------------------------------------------------------
# What goes into the zip.
# ---------------------------------------------------------------------------------------------
def find_entry_script(root: Path) -> Path:
    """The project's entry script: the one .py file at ``root``, or the one named ``*_02_02.py``.

    Args:
        root: the project folder.

    Raises:
        UserError: none, or several that cannot be told apart.
    """
    scripts = sorted(p for p in root.glob("*.py") if p.is_file())
    if len(scripts) == 1:
        return scripts[0]
    named = [p for p in scripts if p.name.endswith(f"{SUFFIX}.py")]
    if len(named) == 1:
        return named[0]
    if not scripts:
        raise UserError(f"no Python file at {root}: the entry script (e.g. FirstName_RollNumber_02_02.py) "
                        f"belongs at the project root; point --root at the project")
    raise UserError(f"cannot tell which of {', '.join(p.name for p in scripts)} at {root} is the entry script: "
                    f"keep one *_02_02.py there and move the others into {PACKAGE}/")


def rename_in_text(text: str, old_entry: str, names: Names) -> str:
    """Point every mention of the entry script and of the submission folder/zip at the new names.

    Args:
        text: Readme.txt's or the entry script's text.
        old_entry: the entry script's name in the project (e.g. FirstName_RollNumber_02_02.py);
            it and any other ``..._02_02.py`` become ``ROLL_02_02.py``.
        names: the student's names; ``X_Y_02_02`` folder or zip names become ``FIRST_ROLL_02_02``.
    """
    text = text.replace(old_entry, names.entry)
    text = re.sub(r"(?<![\w-])(?:[\w-]+?_)?[A-Za-z0-9-]+_02_02\.py\b", names.entry, text)
    return re.sub(r"(?<![\w-])[A-Za-z-]+_[A-Za-z0-9-]+_02_02\b(?!\.py)", names.folder, text)


def is_junk(relpath: PurePosixPath) -> bool:
    """Whether a path is a cache, run folder, bytecode or hidden file: never shipped.

    Args:
        relpath: the path inside the project or the zip.
    """
    return (any(part in JUNK_PARTS or part.startswith(".") for part in relpath.parts)
            or relpath.suffix.lower() in JUNK_SUFFIXES)


def dataset_files(names: list[PurePosixPath]) -> list[PurePosixPath]:
    """The files that look like data: archives, tables, arrays, and folders full of pictures.

    Args:
        names: file paths.
    """
    pictures: dict[PurePosixPath, list[PurePosixPath]] = {}
    for name in names:
        if name.suffix.lower() in IMAGE_SUFFIXES:
            pictures.setdefault(name.parent, []).append(name)
    crowded = {folder for folder, files in pictures.items() if len(files) >= IMAGE_FOLDER_LIMIT}
    return [n for n in names if n.suffix.lower() in DATA_SUFFIXES or "-ubyte" in n.name.lower()
            or n.parent in crowded]


def find_case_insensitive(root: Path, name: str) -> Path | None:
    """``root/name``, or a file at ``root`` whose name differs only in case, or None.

    Args:
        root: the folder.
        name: the file name wanted.
    """
    exact = root / name
    if exact.is_file():
        return exact
    return next((p for p in sorted(root.iterdir()) if p.is_file() and p.name.lower() == name.lower()), None)


@dataclass
class Plan:
    """The zip's content: arcname (inside the root folder) -> a source file or bytes; and notes."""
    files: dict[str, Path | bytes]
    notes: list[str]


def plan_submission(root: Path, names: Names) -> Plan:
    """Choose what the zip holds (see the module's docstring); nothing is written.

    Args:
        root: the project folder.
        names: the student's names.
    """
    entry = find_entry_script(root)
    files: dict[str, Path | bytes] = {}
    notes: list[str] = []
    files[names.entry] = rename_in_text(entry.read_text(encoding="utf-8"), entry.name, names).encode("utf-8")
    if entry.name != names.entry:
        notes.append(f"{entry.name} ships as {names.entry}")
    others = [p.name for p in sorted(root.glob("*.py")) if p != entry]
    if others:
        notes.append(f"left out other Python files at the root: {', '.join(others)}")
    for wanted in (REPORT, README, *EXTRA_FILES):
        found = find_case_insensitive(root, wanted)
        if found is None:
            continue
        if found.name != wanted:
            notes.append(f"{found.name} ships as {wanted}")
        files[wanted] = found
    readme = files.get(README)
    if isinstance(readme, Path):
        try:
            files[README] = rename_in_text(readme.read_text(encoding="utf-8"), entry.name, names).encode("utf-8")
        except UnicodeDecodeError:
            notes.append(f"{README} is not UTF-8 text: shipped as it is, script names not rewritten")
    tree: list[PurePosixPath] = []
    for folder in (PACKAGE, MODELS_DIR):
        base = root / folder
        if base.is_dir():
            tree += [PurePosixPath(p.relative_to(root).as_posix()) for p in sorted(base.rglob("*")) if p.is_file()]
    tree = [p for p in tree if not is_junk(p)]
    data = set(dataset_files(tree))
    notebooks = {p for p in tree if p.suffix.lower() == ".ipynb"}
    for path in tree:
        if path not in data and path not in notebooks:
            files[str(path)] = root / path
    if data:
        notes.append(f"left out datasets: {', '.join(str(p) for p in sorted(data)[:5])}"
                     + (f" and {len(data) - 5} more" if len(data) > 5 else ""))
    if notebooks:
        notes.append(f"left out notebooks (only .py code is accepted): {', '.join(map(str, sorted(notebooks)))}")
    files[STUDENT_FILE] = student_json(names).encode()
    return Plan(files, notes)


def student_json(names: Names) -> str:
    """The content of student.json, from which the entry script takes the name and roll number it prints.

    Args:
        names: the student's names.
    """
    return json.dumps({"name": names.first, "roll_number": names.roll}, indent=2) + "\n"


def write_student_file(root: Path, names: Names) -> Path:
    """Store the name and roll number in ``root/student.json``, which the entry script prints.

    Args:
        root: the project folder.
        names: the student's names.
    """
    path = root / STUDENT_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(student_json(names))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path} ({exc.strerror}): make the project folder writable") from exc
    return path


def write_zip(plan: Plan, names: Names, out_dir: Path) -> Path:
    """Write the planned files under ``FIRST_ROLL_02_02/`` into ``FIRST_ROLL_02_02.zip`` (atomically).

    Args:
        plan: what to write.
        names: the student's names.
        out_dir: the folder for the zip.
    """
    path = out_dir / names.zip_name
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    folders = {str(PurePosixPath(a).parent) for a in plan.files} - {"."}
    folders |= {str(parent) for f in list(folders) for parent in PurePosixPath(f).parents if str(parent) != "."}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{names.folder}/", b"")
            for folder in sorted(folders):
                zf.writestr(f"{names.folder}/{folder}/", b"")
            for arcname, source in sorted(plan.files.items()):
                target = f"{names.folder}/{arcname}"
                if isinstance(source, bytes):
                    zf.writestr(target, source)
                else:
                    zf.write(source, target)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path} ({exc.strerror}): choose a writable --out") from exc
    return path


# ---------------------------------------------------------------------------------------------
# The rules, checked on the zip as shipped.
# ---------------------------------------------------------------------------------------------
def read_zip(path: Path) -> list[str]:
    """The zip's member names (folders end with /).

    Args:
        path: the zip.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path} is not a readable zip file ({exc}): build it again") from exc


def root_folder(members: list[str], names: Names) -> str:
    """The zip's root folder: FIRST_ROLL_02_02 when present, else its only top folder, else "" (none).

    Args:
        members: the zip's member names.
        names: the student's names.
    """
    tops = sorted({m.split("/", 1)[0] for m in members if "/" in m})
    if names.folder in tops:
        return names.folder
    return tops[0] if len(tops) == 1 else ""


def check_saved_models(folder: Path) -> tuple[bool, str]:
    """Whether the unpacked root folder holds the grader's model, and only readable models.

    Args:
        folder: the unpacked root folder.

    Returns:
        (ok, what was found).
    """
    from .checkpoint import read_checkpoint

    models = sorted((folder / MODELS_DIR).glob("*.pt")) if (folder / MODELS_DIR).is_dir() else []
    if not models:
        return False, f"no {MODELS_DIR}/ folder with .pt models"
    broken = []
    for model in models:
        try:
            read_checkpoint(model)
        except UserError:
            broken.append(model.name)
    names = ", ".join(m.name for m in models)
    if broken:
        return False, f"unreadable: {', '.join(broken)} (of {names})"
    if not (folder / GRADER_MODEL).is_file():
        return False, f"{names}, but not {GRADER_MODEL}, which the grader's command loads"
    return True, names


def check_rules(zip_path: Path, unpacked: Path, names: Names, root: Path) -> list[Rule]:
    """Check every convention of the guidelines on the zip and its unpacked copy.

    Args:
        zip_path: the zip to check.
        unpacked: the folder it was unpacked into.
        names: the student's names.
        root: the project folder, named in the fixes.
    """
    members = read_zip(zip_path)
    files = [PurePosixPath(m) for m in members if not m.endswith("/")]
    tops = sorted({m.split("/", 1)[0] for m in members})
    base = root_folder(members, names)
    folder = unpacked / base
    at_root = {p.name for p in files if p.parent == PurePosixPath(base)}
    scripts = sorted(n for n in at_root if n.endswith(".py"))
    rules = [
        Rule(f"zip named FirstName_RollNumber{SUFFIX}.zip", zip_path.name == names.zip_name, zip_path.name,
             f"rename the zip to {names.zip_name}"),
        Rule(f"one root folder named FirstName_RollNumber{SUFFIX}", tops == [names.folder],
             ", ".join(f"{t}/" if any(m.startswith(t + "/") for m in members) else t for t in tops) or "empty zip",
             f"put everything inside one folder {names.folder}/ before zipping"),
        Rule("one Python file in the root folder", len(scripts) == 1, ", ".join(scripts) or "none",
             f"keep only {names.entry} at the root; move other code into {PACKAGE}/"),
        Rule(f"Python file named rollNumber{SUFFIX}.py", scripts == [names.entry], ", ".join(scripts) or "none",
             f"name the script {names.entry}"),
    ]
    report = folder / REPORT
    is_pdf = report.is_file() and report.read_bytes()[:5] == b"%PDF-"
    rules.append(Rule(f"{REPORT} in the root folder", is_pdf,
                      ("a PDF" if is_pdf else "not a PDF file") if report.is_file() else "missing",
                      f"write the report (results and figures, not code) and save it as {root / REPORT}"))
    readme = folder / README
    text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
    stale = sorted(set(re.findall(r"[\w-]+_02_02\.py", text)) - {names.entry})
    readme_ok = bool(text.strip()) and names.entry in text and not stale
    rules.append(Rule(f"{README} explains how to run the code", readme_ok,
                      "missing" if not readme.is_file() else
                      (f"names {', '.join(stale)}" if stale else
                       (f"shows how to run {names.entry}" if readme_ok else f"never mentions {names.entry}")),
                      f"write {root / README} with the commands to train and to evaluate, e.g. "
                      f"'python {names.entry} --data DIR --train'"))
    models_ok, models_detail = check_saved_models(folder)
    rules.append(Rule("a folder with the saved models", models_ok, models_detail,
                      f"train and save the model: python {names.entry} --train --model {GRADER_MODEL}"))
    notebooks = [str(p) for p in files if p.suffix.lower() == ".ipynb"]
    rules.append(Rule("code in .py files only, no notebooks", not notebooks, ", ".join(notebooks) or "none",
                      "convert notebooks to .py files and leave the .ipynb out"))
    data = [str(p) for p in dataset_files(files)]
    rules.append(Rule("no datasets", not data, (", ".join(data[:4]) + (" ..." if len(data) > 4 else "")) or "none",
                      "leave the provided dataset out of the submission"))
    junk = sorted({str(p) for p in files if is_junk(p)})
    rules.append(Rule("no caches, run folders or bytecode", not junk,
                      (", ".join(junk[:4]) + (" ..." if len(junk) > 4 else "")) or "none",
                      "leave out __pycache__/, *.pyc, runs/ and hidden files"))
    student = identity(folder / STUDENT_FILE) if (folder / STUDENT_FILE).is_file() else None
    rules.append(Rule("the code prints your name and roll number",
                      student == {"name": names.first, "roll_number": names.roll},
                      f"{STUDENT_FILE}: {student['name']}, {student['roll_number']}" if student
                      else f"no {STUDENT_FILE}",
                      "build the zip with this command, which writes student.json"))
    return rules


def run_grader(folder: Path, names: Names, timeout: float = GRADER_TIMEOUT_S) -> Rule:
    """Run the grader's command, ``python ROLL_02_02.py``, in the unpacked root folder.

    It must finish with status 0 and print the student's name and roll number.

    Args:
        folder: the unpacked root folder.
        names: the student's names.
        timeout: seconds before the run counts as failed.
    """
    rule = f"runs as shipped: python {names.entry}"
    fix = "run that command in the unpacked folder and fix what it reports"
    script = folder / names.entry
    if not script.is_file():
        return Rule(rule, False, f"no {names.entry} in the zip", fix)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        done = subprocess.run([sys.executable, names.entry], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Rule(rule, False, f"still running after {timeout:.0f} s", fix)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        last = [line for line in output.splitlines() if line.strip()][-1:] or ["no output"]
        return Rule(rule, False, f"exit status {done.returncode}: {last[0][:160]}", fix)
    if f"Name: {names.first}" not in output or f"Roll number: {names.roll}" not in output:
        return Rule(rule, False, "it ran but did not print your name and roll number", fix)
    accuracy = re.search(r"^\s*test\s.*accuracy\s+([0-9.]+)", done.stdout, re.MULTILINE)
    return Rule(rule, True, f"exit status 0, test accuracy {accuracy.group(1)}" if accuracy else "exit status 0")


def format_rules(rules: list[Rule]) -> str:
    """The rule table: rule, PASS/FAIL/SKIP, what was found; a fix line under each failure.

    Args:
        rules: the checked rules.
    """
    width = max(len(r.rule) for r in rules)
    lines = [f"{'rule':<{width}}  result  found", f"{'-' * width}  ------  -----"]
    for r in rules:
        result = "PASS" if r.ok else ("SKIP" if r.ok is None else "FAIL")
        lines.append(f"{r.rule:<{width}}  {result:<6}  {r.detail}".rstrip())
        if r.ok is False and r.fix:
            lines.append(f"{'':<{width}}  {'':<6}  fix: {r.fix}")
    return "\n".join(lines)


def verify(zip_path: Path, names: Names, root: Path, run: bool) -> list[Rule]:
    """Unpack the zip into a temporary folder, check every rule there, and run the grader's command.

    Args:
        zip_path: the zip.
        names: the student's names.
        root: the project folder, named in the fixes.
        run: run the grader's command (else its rule is SKIP).
    """
    with tempfile.TemporaryDirectory(prefix="submission-") as tmp:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)
        except (zipfile.BadZipFile, OSError) as exc:
            raise UserError(f"{zip_path} cannot be unpacked ({exc}): build it again") from exc
        rules = check_rules(zip_path, Path(tmp), names, root)
        if run:
            print(f"running the grader's command in an unpacked copy: python {names.entry} ...", flush=True)
            rules.append(run_grader(Path(tmp) / root_folder(read_zip(zip_path), names), names))
        else:
            rules.append(Rule(f"runs as shipped: python {names.entry}", None, "not run (--skip-run)"))
    return rules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mobilenet_lab.submit",
        description="Build FIRST_ROLL_02_02.zip for submission, check every naming rule of the assignment's "
                    "guidelines on it, and run the grader's command in an unpacked copy.")
    parser.add_argument("--name", metavar="FIRST", default=None,
                        help="your first name, as in the zip's name (default: the one in the project's student.json)")
    parser.add_argument("--roll-number", metavar="ROLL", default=None,
                        help="your roll number, as in the script's name (default: the one in student.json)")
    parser.add_argument("--root", metavar="DIR", type=Path, default=PROJECT_ROOT,
                        help="the project folder to package (default: this project, where the entry script is)")
    parser.add_argument("--out", metavar="DIR", type=Path, default=None,
                        help="folder to write the zip into (default: the project folder given by --root)")
    parser.add_argument("--skip-run", action="store_true",
                        help="do not run the grader's command in an unpacked copy (default: run it)")
    parser.add_argument("--check", metavar="ZIP", type=Path, default=None,
                        help="only check this existing zip against the rules; build nothing (default: build)")
    args = parser.parse_args(argv)
    return run_cli(run, args)


def run(args: argparse.Namespace) -> int:
    """Write student.json and the zip (unless --check), then check and report every rule.

    Args:
        args: the parsed command line.

    Returns:
        0 when every rule passes, 1 when one fails.
    """
    root = args.root.resolve()
    if not root.is_dir():
        raise UserError(f"--root {root} is not a folder: point it at the project folder")
    stored = identity(root / STUDENT_FILE)
    names = check_names(args.name if args.name is not None else stored["name"],
                        args.roll_number if args.roll_number is not None else stored["roll_number"])
    if args.check is not None:
        zip_path = args.check
        if not zip_path.is_file():
            raise UserError(f"--check {zip_path} does not exist: give the zip to check")
    else:
        plan = plan_submission(root, names)
        print(f"wrote {write_student_file(root, names)} (name {names.first}, roll number {names.roll})")
        zip_path = write_zip(plan, names, (args.out or root).resolve())
        print(f"wrote {zip_path} ({len(plan.files)} files, {zip_path.stat().st_size / 1e6:.1f} MB)")
        for line in plan.notes:
            print(f"  {line}")
    rules = verify(zip_path, names, root, run=not args.skip_run)
    print()
    print(format_rules(rules))
    failed = [r for r in rules if r.ok is False]
    print()
    if failed:
        print(f"{len(failed)} of {len(rules)} rules fail (each costs 3%): fix them and run this again; "
              f"{zip_path} is not ready to submit")
        return 1
    print(f"every rule passes: submit {zip_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
