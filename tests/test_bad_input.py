"""A corpus of bad and odd inputs for the root script, each with its expected outcome.

Odd but valid input is accepted (exit 0, with a note where useful); bad input gets one
'error:' line that says what is wrong and how to fix it, exit status 2 and no traceback.
Nothing in saved_models/ changes either way. The cases put the oddity into the test part
and evaluate a tiny saved model, so each case costs about a second.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import digits, tree_hash, write_folder_part
from test_cli import ROOT, assert_clean_failure, run_here


def base_part(folder: Path, n: int = 20) -> Path:
    """A valid test part as a folder: test/images/img_i.png and test/test.csv."""
    x, y = digits()
    return write_folder_part(folder / "test", x[:n], y[:n], image_dir="images", csv_name="test.csv")


def edit_csv(part: Path, change) -> None:
    csv = part / "test.csv"
    csv.write_text(change(csv.read_text()))


def image(part: Path, i: int) -> Path:
    return part / "images" / f"img_{i}.png"


def digit(i: int) -> np.ndarray:
    return digits()[0][i]


def replace_image(part: Path, i: int, writer) -> None:
    path = image(part, i)
    path.unlink()
    writer(path)


# name: (how to spoil a valid test part, expected exit status, text expected in the error line or a note)
CASES = {
    # -- bad: exit 2 ----------------------------------------------------------------------
    "empty-csv": (lambda p: (p / "test.csv").write_text(""), 2, "is empty or not a CSV"),
    "header-only-csv": (lambda p: (p / "test.csv").write_text("filename,label\n"), 2, "no data rows"),
    "one-column-csv": (lambda p: edit_csv(p, lambda t: "\n".join(r.split(",")[0] for r in t.splitlines())), 2,
                       "it needs two"),
    "negative-label": (lambda p: edit_csv(p, lambda t: t.replace(t.splitlines()[1], "img_0.png,-1")), 2,
                       "negative label"),
    "float-label": (lambda p: edit_csv(p, lambda t: t.replace(t.splitlines()[1], "img_0.png,2.5")), 2,
                    "not an integer"),
    "conflicting-duplicate": (lambda p: edit_csv(p, lambda t: t + f"img_0.png,{(int(digits()[1][0]) + 1) % 10}\n"),
                              2, "two different labels"),
    "zero-byte-image": (lambda p: image(p, 3).write_bytes(b""), 2, "is empty (0 bytes)"),
    "truncated-png": (lambda p: image(p, 3).write_bytes(image(p, 3).read_bytes()[:60]), 2, "cannot be decoded"),
    "text-named-png": (lambda p: image(p, 3).write_text("not an image at all"), 2, "cannot be decoded"),
    "listed-image-missing": (lambda p: image(p, 5).unlink(), 2, "missing"),
    "no-images": (lambda p: [f.unlink() for f in (p / "images").iterdir()], 2, "no images"),
    "label-above-model": (lambda p: edit_csv(p, lambda t: t.replace(t.splitlines()[1], "img_0.png,10")), 2,
                          "not below the 10 classes of the saved model"),
    # -- odd but valid: exit 0 ------------------------------------------------------------
    "extra-columns": (lambda p: edit_csv(p, lambda t: "\n".join(r + ",x" for r in t.splitlines())), 0,
                      "ignoring the other 1"),
    "same-duplicate": (lambda p: edit_csv(p, lambda t: t + t.splitlines()[1] + "\n"), 0, "twice"),
    "rgb-png": (lambda p: replace_image(p, 2, lambda f: Image.fromarray(np.stack([digit(2)] * 3, -1)).save(f)),
                0, "RGB images converted to grayscale"),
    "rgba-png": (lambda p: replace_image(p, 2, lambda f: Image.fromarray(np.stack([digit(2)] * 4, -1), "RGBA")
                                         .save(f)), 0, "flattened onto black"),
    "16-bit-png": (lambda p: replace_image(p, 2, lambda f: Image.fromarray(digit(2).astype(np.uint16) * 257)
                                           .save(f)), 0, "16-bit images scaled"),
    "palette-png": (lambda p: replace_image(p, 2, lambda f: Image.fromarray(digit(2)).convert("P").save(f)), 0,
                    "P images converted"),
    "jpeg-named-png": (lambda p: replace_image(p, 2, lambda f: Image.fromarray(digit(2)).save(f, "JPEG")), 0, ""),
    "bigger-image": (lambda p: replace_image(p, 2, lambda f: Image.fromarray(digit(2)).resize((64, 64)).save(f)),
                     0, "resized to 28x28"),
    "names-without-extension": (lambda p: edit_csv(p, lambda t: t.replace(".png", "")), 0, ""),
    "windows-line-endings": (lambda p: edit_csv(p, lambda t: t.replace("\n", "\r\n")), 0, ""),
    "blank-lines-in-csv": (lambda p: edit_csv(p, lambda t: t.replace("\n", "\n\n", 3)), 0, ""),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_corpus_case(case, tmp_path, tiny_model):
    spoil, status, text = CASES[case]
    data = tmp_path / "data"
    part = base_part(data)
    spoil(part)
    saved = tree_hash(ROOT / "saved_models")
    result = run_here("--data", data, "--model", tiny_model, "--out", tmp_path / "run")
    if status == 2:
        assert_clean_failure(result, text)
        assert not (tmp_path / "run" / "metrics.json").exists()
    else:
        assert result.returncode == 0, result.stderr
        assert text in result.stderr
        assert "Traceback" not in result.stderr
    assert tree_hash(ROOT / "saved_models") == saved


def test_empty_zip_part(tmp_path, tiny_model):
    import zipfile
    data = tmp_path / "data"
    data.mkdir()
    zipfile.ZipFile(data / "test.zip", "w").close()
    assert_clean_failure(run_here("--data", data, "--model", tiny_model, "--out", tmp_path / "r"), "is empty")


def test_two_candidate_parts(tmp_path, tiny_model):
    data = tmp_path / "data"
    base_part(data)
    base_part(data / "other")
    (data / "other" / "test").rename(data / "test_copy")
    assert_clean_failure(run_here("--data", data, "--model", tiny_model, "--out", tmp_path / "r"),
                         "candidate test parts")


def test_missing_test_part(tmp_path, tiny_model):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    assert_clean_failure(run_here("--data", data, "--model", tiny_model, "--out", tmp_path / "r"), "no test part")


def test_pickled_code_checkpoint_is_refused(tmp_path, tiny_data):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"format": "mobilenet_lab.checkpoint/2", "x": Evil()}, tmp_path / "evil.pt")
    result = run_here("--data", tiny_data, "--model", tmp_path / "evil.pt", "--out", tmp_path / "r")
    assert_clean_failure(result, "refused for safety")
    assert "this must never run" not in result.stdout


def test_checkpoint_with_other_num_classes(tmp_path, tiny_data):
    from mobilenet_lab.checkpoint import save
    from mobilenet_lab.model import init_network
    path = save(init_network(1, 1, (1, 28, 28), 5, device="cpu"), tmp_path / "five.pt")
    result = run_here("--data", tiny_data, "--model", path, "--out", tmp_path / "r")
    assert_clean_failure(result, "not below the 5 classes of the saved model")


def test_an_unwritable_output_folder_stops_training_and_lets_an_evaluation_print(tmp_path, tiny_model, tiny_data):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() == 0:
            pytest.skip("root can write into read-only folders; test_shared_folders_and_special_files mounts one")
        assert_clean_failure(run_here("--data", tiny_data, "--train", "--out", locked / "run"),
                             "cannot write to the output folder")
        result = run_here("--data", tiny_data, "--model", tiny_model, "--out", locked / "run")
        assert result.returncode == 0 and "note: cannot write to the output folder" in result.stderr
    finally:
        locked.chmod(0o700)
