"""Build the submission zip and check it against every rule of the assignment's guidelines.

    python -m mobilenet_lab submit --name FIRST --roll-number ROLL     # build, check, run as a grader would
    python -m mobilenet_lab submit --check ZIP [--run]                  # check any zip (and run it)

The zip ``FIRST_ROLL_02_02.zip`` holds one folder ``FIRST_ROLL_02_02/`` with exactly four entries:
``ROLL_02_02.py``, ``Report.pdf`` (rebuilt from results/ with the student's name), ``Readme.txt``
(written for the grader) and ``saved_models/``. The one .py file is generated here from the
package's core modules, module by module under a header comment each, followed by the root
script's main; the package stays the only copy of the code in the repository. The packager then
runs the unpacked copy in a fresh folder with neither the repository nor the package on the path:
the grader's command, and a one-epoch training run on a small subset. Exit status 0 when every rule
passes, 1 when one fails, 2 on bad input."""
import argparse
import ast
import graphlib
import inspect
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path, PurePosixPath

from pypdf import PdfReader

from ..checkpoint import read_checkpoint
from ..reading import IMAGE_EXTENSIONS
from ..errors import Parser, UserError, run_cli
from ..experiments.measure import ROOT
from ..experiments.pdf import build_pdf
from ..files import atomic_write
from ..student import PLACEHOLDER, identity

CORE = ROOT / "mobilenet_lab"
SUFFIX = "_02_02"
ROOT_ENTRIES = 4
MAX_ZIP_MB = 50          # what course sites commonly accept for one upload
PACKAGES = ("torch", "torchvision", "numpy", "pandas", "pillow", "scikit-learn", "scipy", "matplotlib", "seaborn",
            "mlxtend")
DATA_SUFFIXES = (".csv", ".tsv", ".npy", ".npz", ".idx", ".gz", ".zip", ".tar", ".7z", ".rar", ".h5", ".parquet", ".pkl")
RUN_TIMEOUT_S = 900
README = Path(__file__).resolve().parent / "grader_readme.txt"


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
    """One convention and how the submission fares: ok True (PASS), False (FAIL) or None (not checked)."""
    rule: str
    ok: bool | None
    detail: str = ""
    fix: str = ""


def check_names(first: str, roll: str) -> Names:
    first, roll = first.strip(), roll.strip()
    if not first or first == PLACEHOLDER["name"]:
        raise UserError("give your first name with --name FIRST (the zip is named FIRST_ROLL_02_02.zip)")
    if not roll or roll == PLACEHOLDER["roll_number"]:
        raise UserError("give your roll number with --roll-number ROLL (the script is named ROLL_02_02.py)")
    if not (first[0].isalpha() and all(c.isalpha() or c == "-" for c in first)):
        raise UserError(f"--name '{first}' must be your first name alone: letters (and hyphens) only, no spaces or "
                        f"underscores")
    if not all(c.isascii() and (c.isalnum() or c == "-") for c in roll):
        raise UserError(f"--roll-number '{roll}' must be letters, digits and hyphens only, no spaces or underscores")
    return Names(first, roll)


# The graded file's sections in the assignment's order: (heading, module of the package or "main" for the root script).
SECTIONS = [("1. Data loader: the Dataset, its split into training and validation, the DataLoader", "data"),
            ("2. The ConvDw block, and init_network: both architectures, global average pooling", "model"),
            ("3. Training", "training"),
            ("4-5. Save and load the network", "checkpoint"),
            ("6. Test", "evaluation"),
            ("7. Visualize", "figures"),
            ("8. Main", "main")]
# (what the assignment marks, the definitions that answer it) for the contents table at the top of the file.
CONTENTS = [("Data loader (10%)", ["class ImageSet(", "class MnistCsvDataset(", "def data_loader(",
                                    "def load_splits("]),
            ("ConvDw: the MobileNet block (10%)", ["class ConvDw("]),
            ("Architectures (15%): init_network", ["def init_network(", "def block_schedule(", "ARCHS = "]),
            ("Global average pooling (5%)", ["self.pool = "]),
            ("Train", ["def train("]), ("Save", ["def save("]), ("Load", ["def load("]), ("Test", ["def test("]),
            ("Visualization (10%)", ["def visualize("]), ("Main and its arguments", ["def main(", "def build_parser("])]


def core_modules(package: Path = CORE) -> list[Path]:
    """The core modules (not tools/ or experiments/) in an order where each comes after those it imports."""
    files = {p.stem: p for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    needs = {name: {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)
                    and n.level == 1 and n.module in files} for name, path in files.items()}
    try:
        return [files[name] for name in graphlib.TopologicalSorter(needs).static_order()]
    except graphlib.CycleError as exc:
        raise UserError(f"the core modules import each other in a circle ({', '.join(exc.args[1])})") from None


def _split_imports(source: str) -> tuple[str, list[str]]:
    """The module without its docstring-level imports: returns (the rest, its outside imports as source lines). Imports
    of the package itself, ``from __future__`` and the root script's path line are dropped (one file has no
    package); imports inside functions stay where they are unless they import the package."""
    tree, lines = ast.parse(source), source.splitlines(keepends=True)
    cut, imports = set(), []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        ours = isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in
                                                      ("mobilenet_lab", "__future__"))
        if ours or node in tree.body:
            cut.update(range(node.lineno - 1, node.end_lineno))
            if not ours:
                imports.append(ast.get_source_segment(source, node))
    for node in tree.body:  # sys.path.insert(...): only the repository needs it
        if isinstance(node, ast.Expr) and "sys.path.insert" in ast.get_source_segment(source, node):
            cut.update(range(node.lineno - 1, node.end_lineno))
    return "".join(line for i, line in enumerate(lines) if i not in cut), imports


def _defined(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def single_file(names: Names, project: Path = ROOT, package: Path | None = None) -> str:
    """The submission's one .py file: a contents table; the assignment's parts in its order (SECTIONS); the helpers
    they use, each module under a header comment; the ``if __name__ == "__main__"`` line. Every outside import is
    gathered at the top. Two modules that define the same top-level name stop the build."""
    package = package or project / "mobilenet_lab"
    root = find_entry_script(project)
    modules = {p.stem: p for p in core_modules(package)}
    marked = [name for _, name in SECTIONS if name != "main"]
    headings = dict((name, heading) for heading, name in SECTIONS)
    order = [(headings[n], modules[n]) for n in marked] + [(headings["main"], root)] + [
        ("Helpers", p) for n, p in modules.items() if n not in marked]
    owner, imports, parts, run_line = {}, [], [], ""
    for heading, path in order:
        where = path.name if path == root else f"mobilenet_lab/{path.name}"
        text, found = _split_imports(path.read_text(encoding="utf-8"))
        if path.stem == "student":
            text = (f'def identity() -> dict[str, str]:\n    """The student whose work this is."""\n'
                    f'    return {{"name": "{names.first}", "roll_number": "{names.roll}"}}\n')
        if path == root:  # its docstring gives way to the file's; its last lines run main, at the very end
            text = text.split('"""', 2)[2]
            text, run_line = text.split('\nif __name__ == "__main__":')
            run_line = 'if __name__ == "__main__":' + run_line
        else:
            text = _docstring_as_comment(text)
        for name in _defined(text):
            if name in owner:
                raise UserError(f"two core modules define the same top-level name {name!r}: {owner[name]} and "
                                f"{where}; rename one, as one file cannot hold both")
            owner[name] = where
        imports += [line for line in found if line not in imports]
        parts.append(f"\n\n# {'=' * 100}\n# {heading}\n# {'=' * 100}\n{text.strip()}\n")
    body = "\n" + _merged(imports) + "\n" + "".join(parts)
    body += f"\n\n{run_line.strip()}\n"
    return _contents(names, version_of_package(package), body) + body


def _docstring_as_comment(source: str) -> str:
    """A module's docstring as comment lines: in one file only the first string is the file's docstring."""
    first = ast.parse(source).body[:1]
    if not (first and isinstance(first[0], ast.Expr) and isinstance(first[0].value, ast.Constant)
            and isinstance(first[0].value.value, str)):
        return source
    lines = source.splitlines(keepends=True)
    comment = "".join(f"# {line}".rstrip() + "\n" for line in inspect.cleandoc(first[0].value.value).splitlines())
    return "".join(lines[:first[0].lineno - 1]) + comment + "".join(lines[first[0].end_lineno:])


def _merged(imports: list[str]) -> str:
    """Import lines without repeats: plain imports, then one ``from M import ...`` per module."""
    plain, names = set(), {}
    for line in imports:
        node = ast.parse(line).body[0]
        if isinstance(node, ast.Import):
            plain.add(line)
        else:
            names.setdefault(node.module, set()).update(a.name + (f" as {a.asname}" if a.asname else "")
                                                       for a in node.names)
    froms = [textwrap.fill(f"from {m} import {', '.join(sorted(n, key=str.lower))}", 120, subsequent_indent="    ",
                           break_long_words=False).replace("import ", "import (", 1) + ")" if len(
        f"from {m} import {', '.join(n)}") > 120 else f"from {m} import {', '.join(sorted(n, key=str.lower))}"
             for m, n in sorted(names.items())]
    return "\n".join(sorted(plain) + froms)


def _contents(names: Names, version: str, body: str) -> str:
    """The file's docstring: who, and where each part the assignment marks is (line numbers of the whole file)."""
    rows = [(what, [d for d in defs if d in body]) for what, defs in CONTENTS]
    lines = body.splitlines()
    helpers = next(i for i, line in enumerate(lines) if line.startswith("# Helpers"))

    def text(head: int) -> str:  # the docstring when it and what follows take ``head`` lines
        def at(found: str) -> str:
            number = next(i for i, line in enumerate(lines) if line.lstrip().startswith(found))
            name = found.split()[1].rstrip("(") if found.startswith(("def ", "class ")) else found.split("=")[0].strip()
            return f"{name} (line {number + head + 1})"
        table = [textwrap.fill(", ".join(at(d) for d in defs), 116, initial_indent=f"  {what:<38} ",
                               subsequent_indent=" " * 41) for what, defs in rows]
        return (f'"""{names.first} ({names.roll}): Deep Learning, Assignment 3, Classification of MNIST using '
                f'PyTorch.\n\nWhere each part the assignment marks is (run the file with --help for its arguments):\n'
                + "\n".join(table) + f"\n  {'Helpers they use':<38} from line {helpers + head + 1}\n"
                + '"""\n' + "from __future__ import annotations\n\n" + f"__version__ = {version!r}" + "\n")
    head = 0
    while head != (head := len(text(head).splitlines())):  # the line numbers can lengthen the table: settle
        pass
    return text(head)


def version_of_package(package: Path) -> str:
    return re.search(r'__version__ = "([^"]+)"', (package / "__init__.py").read_text()).group(1)


def find_entry_script(root: Path) -> Path:
    scripts = sorted(p for p in root.glob("*.py") if p.is_file())
    named = [p for p in scripts if p.name.endswith(f"{SUFFIX}.py")]
    if len(named) == 1:
        return named[0]
    if not scripts:
        raise UserError(f"no Python file at {root}: the entry script (e.g. FirstName_RollNumber_02_02.py) belongs at "
                        f"the project root; point --root at the project")
    raise UserError(f"cannot tell which of {', '.join(p.name for p in scripts)} at {root} is the entry script: keep "
                    f"one *_02_02.py there")


def grader_readme(names: Names, project: Path) -> str:
    """Readme.txt for the grader (grader_readme.txt filled in): what to install, how to evaluate each saved model and
    what it scores, how to train; every command works with what the zip holds."""
    scores = []
    for model in sorted((project / "saved_models").glob("*.pt")):
        read_checkpoint(model)  # a damaged model stops the build here
        found = project / "results" / "runs" / f"{model.stem}.json"  # the report's run that trained it
        metrics = json.loads(found.read_text())["metrics"] if found.is_file() else None
        scores.append(f"  {model.name:<14} " + (f"test accuracy {metrics['accuracy']:.4f}, macro F1 "
                                                f"{metrics['f1_macro']:.4f} on the {metrics['n']:,} test digits"
                                                if metrics else "test accuracy: see Report.pdf"))
    return README.read_text().format(first=names.first, roll=names.roll, e=names.entry, rule="=" * 78,
                                     pins=" ".join(f"{p}=={version(p)}" for p in PACKAGES), scores="\n".join(scores))


def write_zip(files: dict[str, bytes], names: Names, out_dir: Path) -> Path:
    """The files (arcname inside the root folder -> bytes) under FIRST_ROLL_02_02/, every file 0644, atomically."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        folders = sorted({str(p) for a in files for p in PurePosixPath(a).parents if str(p) != "."})
        for folder in [""] + folders:
            info = zipfile.ZipInfo(f"{names.folder}/{folder}/".replace("//", "/"))
            info.external_attr = (0o40755 << 16) | 0x10
            zf.writestr(info, b"")
        for arcname, data in sorted(files.items()):
            info = zipfile.ZipInfo(f"{names.folder}/{arcname}", date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr, info.compress_type = 0o100644 << 16, zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return atomic_write(out_dir / names.zip_name, buffer.getvalue())


def build(names: Names, project: Path, out_dir: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        build_pdf(project / "results", Path(tmp) / "Report.pdf", names.first, names.roll)
        files = {names.entry: single_file(names, project).encode(), "Report.pdf": (Path(tmp) / "Report.pdf").read_bytes(),
                 "Readme.txt": grader_readme(names, project).encode()}
    for model in sorted((project / "saved_models").glob("*.pt")):
        files[f"saved_models/{model.name}"] = model.read_bytes()
    return write_zip(files, names, out_dir)


def check_zip(zip_path: Path, names: Names, unpacked: Path) -> list[Rule]:
    """Every convention of the guidelines, on the zip and its unpacked copy (nothing of it is run)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            zf.extractall(unpacked)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{zip_path} is not a readable zip ({exc}): build it again") from exc
    members = [PurePosixPath(i.filename) for i in infos]
    files = [PurePosixPath(i.filename) for i in infos if not i.is_dir()]
    tops = sorted({m.parts[0] for m in members})
    base = names.folder if names.folder in tops else (tops[0] if len(tops) == 1 else "")
    folder = unpacked / base
    entries = sorted({m.parts[1] for m in members if len(m.parts) > 1 and m.parts[0] == base})
    scripts = [e for e in entries if e.endswith(".py")]
    report, readme = folder / "Report.pdf", folder / "Readme.txt"
    pdf_text = _pdf_text(report)
    readme_text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
    data = [str(f) for f in files if f.suffix.lower() in DATA_SUFFIXES or "-ubyte" in f.name
            or (f.suffix.lower() in IMAGE_EXTENSIONS)]
    bad_modes = [i.filename for i in infos if not i.is_dir() and (i.external_attr >> 16) & 0o777 not in (0o644, 0)]
    models = sorted((folder / "saved_models").glob("*.pt")) if (folder / "saved_models").is_dir() else []
    size_mb = zip_path.stat().st_size / 1e6
    return [
        Rule(f"zip named FirstName_RollNumber{SUFFIX}.zip", zip_path.name == names.zip_name, zip_path.name,
             f"rename the zip to {names.zip_name}"),
        Rule(f"one root folder named FirstName_RollNumber{SUFFIX}", tops == [names.folder], ", ".join(tops) or "empty",
             f"put everything inside one folder {names.folder}/"),
        Rule("exactly four root entries: the .py, Report.pdf, Readme.txt, saved_models/", set(entries) == {
            names.entry, "Report.pdf", "Readme.txt", "saved_models"}, ", ".join(entries) or "none",
             "keep only those four in the root folder"),
        Rule("one Python file in the root folder", len(scripts) == 1, ", ".join(scripts) or "none",
             f"keep only {names.entry} there"),
        Rule(f"Python file named rollNumber{SUFFIX}.py", names.entry in scripts, ", ".join(scripts) or "none",
             f"name the script {names.entry}"),
        Rule("code in .py files only, no notebooks", not any(f.suffix.lower() == ".ipynb" for f in files),
             ", ".join(str(f) for f in files if f.suffix.lower() == ".ipynb") or "none", "convert notebooks to .py"),
        Rule("Report.pdf in the root folder", pdf_text is not None, "a PDF" if pdf_text is not None else
             ("not a readable PDF" if report.exists() else "missing"), "build it: python -m mobilenet_lab report"),
        Rule("Report.pdf carries your name and roll number", bool(pdf_text) and names.first in pdf_text
             and names.roll in pdf_text and "FirstName" not in pdf_text,
             "yes" if pdf_text and names.first in pdf_text else "no", "rebuild it with --name and --roll-number"),
        Rule("Readme.txt explains how to run the code", names.entry in readme_text and "pip install" in readme_text,
             "shows how to install and run" if names.entry in readme_text else "missing or never names the script",
             "write the install, evaluate and train commands into Readme.txt"),
        Rule("a folder with the saved models", bool(models), ", ".join(m.name for m in models) or "none",
             f"train and save: python {names.entry} --train --model saved_models/mobilenet.pt"),
        Rule("no datasets (images, IDX files, label CSVs)", not data, ", ".join(data[:4]) or "none",
             "leave the provided dataset out of the submission"),
        Rule("no caches or bytecode", not any(p in ("__pycache__", ".cache") or f.suffix == ".pyc" for f in files
                                              for p in f.parts), "none", "leave out __pycache__/ and *.pyc"),
        Rule("every file readable by anyone (mode 0644)", not bad_modes, ", ".join(bad_modes[:3]) or "all 0644",
             "chmod 644 the files before zipping"),
        Rule(f"zip size at most {MAX_ZIP_MB} MB", size_mb <= MAX_ZIP_MB, f"{size_mb:.1f} MB",
             "leave out run folders and large files"),
    ]


def _pdf_text(path: Path) -> str | None:
    try:
        reader = PdfReader(str(path))
        return " ".join(page.extract_text() or "" for page in reader.pages) + f" {reader.metadata.author or ''}"
    except Exception:  # noqa: BLE001  (any failure: not a readable PDF)
        return None


def run_as_grader(folder: Path, names: Names) -> list[Rule]:
    """The .py answers --help; ``python ROLL_02_02.py`` evaluates the saved model; a one-epoch training run on a small
    subset works; each prints the name. Run isolated (-I) in the unpacked folder: no package on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    rules = []
    for what, args in (("answers --help", ["--help"]), ("evaluates the saved model", []),
                       ("trains one epoch on a subset", ["--train", "--epochs", "1", "--train-size", "500",
                                                         "--test-size", "200", "--out", "runs/check"])):
        rule = f"python {names.entry} {' '.join(args[:5])}".strip()
        try:
            done = subprocess.run([sys.executable, "-I", names.entry, *args], cwd=folder, env=env, capture_output=True,
                                  text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            rules.append(Rule(f"{rule}: {what}", False, f"still running after {RUN_TIMEOUT_S} s"))
            continue
        out = done.stdout + done.stderr
        accuracy = re.search(r"^\s*test\s.*accuracy\s+([0-9.]+)", done.stdout, re.MULTILINE)
        named = args == ["--help"] or (f"Name: {names.first}" in out and f"Roll number: {names.roll}" in out)
        smoke = " (one epoch on 500 images: a smoke test, not a result)" if "--train" in args else ""
        detail = (f"exit status {done.returncode}" + (f", test accuracy {accuracy.group(1)}{smoke}" if accuracy else "")
                  + ("" if named else ", but it does not print your name and roll number"))
        if done.returncode != 0:
            detail += ": " + ([line for line in out.splitlines() if line.strip()][-1:] or ["no output"])[0][:160]
        rules.append(Rule(f"{rule}: {what}", done.returncode == 0 and named, detail,
                          "run that command in the unpacked folder and fix what it reports"))
    return rules


def format_rules(rules: list[Rule]) -> str:
    width = max(len(r.rule) for r in rules)
    lines = [f"{'rule':<{width}}  result  found", f"{'-' * width}  ------  -----"]
    for r in rules:
        lines.append(f"{r.rule:<{width}}  {'PASS' if r.ok else 'SKIP' if r.ok is None else 'FAIL':<6}  {r.detail}".rstrip())
        if r.ok is False and r.fix:
            lines.append(f"{'':<{width}}  {'':<6}  fix: {r.fix}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m mobilenet_lab submit", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", metavar="FIRST", help="your first name (default: student.json's)")
    p.add_argument("--roll-number", metavar="ROLL", help="your roll number (default: student.json's)")
    p.add_argument("--root", metavar="DIR", type=Path, default=ROOT, help="the project to package (default: this one)")
    p.add_argument("--out", metavar="DIR", type=Path, help="folder for the zip (default: the project folder)")
    p.add_argument("--check", metavar="ZIP", type=Path, help="check this zip against the rules; build nothing")
    p.add_argument("--run", action="store_true", help="with --check, also run the unpacked copy as a grader would")
    p.add_argument("--skip-run", action="store_true", help="when building, do not run the unpacked copy")
    return run_cli(_run, p.parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    root = args.root.resolve()
    if not root.is_dir():
        raise UserError(f"--root {root} is not a folder: point it at the project folder")
    stored = identity(root / "student.json")
    names = check_names(args.name or stored["name"], args.roll_number or stored["roll_number"])
    started = time.perf_counter()
    if args.check is not None:
        zip_path = args.check
        if not zip_path.is_file():
            raise UserError(f"--check {zip_path} does not exist: give the zip to check")
    else:
        zip_path = build(names, root, (args.out or root).resolve())
        print(f"wrote {zip_path} ({zip_path.stat().st_size / 1e6:.1f} MB) in "
              f"{time.perf_counter() - started:.0f} s")
    run = args.run if args.check is not None else not args.skip_run
    with tempfile.TemporaryDirectory(prefix="submission-") as tmp:
        rules = check_zip(zip_path, names, Path(tmp))
        if run:
            print(f"running the unpacked copy as a grader would: python {names.entry} ...", flush=True)
            rules += run_as_grader(Path(tmp) / names.folder, names)
        else:
            rules.append(Rule(f"runs as shipped: python {names.entry}", None, "not run"))
    print("\n" + format_rules(rules) + "\n")
    failed = [r for r in rules if r.ok is False]
    if failed:
        print(f"{len(failed)} of {len(rules)} rules fail (each costs 3%): fix them and run this again; "
              f"{zip_path} is not ready to submit")
        return 1
    print(f"every rule passes: submit {zip_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
