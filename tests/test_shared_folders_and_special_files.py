"""Round three of hostile and unlucky input: special files (a FIFO, links to device files, link loops, links out of
the part), names and CSV files from other systems (NFD names, Windows-1252 and UTF-16 CSVs), two runs into one
folder, and places that cannot be written. Each case: its exit status, one 'error:' or 'note:' line, no traceback,
bounded memory (a 6 GB address-space limit) and time, and nothing lost."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from helpers import digits, png_bytes, tree_hash, write_folder_part
from test_cli import ROOT, SCRIPT, assert_clean_failure
from test_faults import run_limited


def dataset_with_test_part(tmp_path: Path, n: int = 8) -> Path:
    """A dataset folder whose test part is a folder: test/images/img_i.png and test/test.csv."""
    x, y = digits()
    write_folder_part(tmp_path / "data" / "test", x[:n], y[:n], image_dir="images", csv_name="test.csv")
    return tmp_path / "data"


def evaluate(data: Path, model: Path, out: Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    started = time.time()
    result = run_limited("--data", data, "--model", model, "--out", out)
    assert time.time() - started < timeout
    return result, time.time() - started


# -- 1. special files ------------------------------------------------------------------------------
def test_a_fifo_listed_as_an_image_is_refused_without_hanging(tmp_path, tiny_model):
    data = dataset_with_test_part(tmp_path)
    image = data / "test" / "images" / "img_3.png"
    image.unlink()
    os.mkfifo(image)
    result, seconds = evaluate(data, tiny_model, tmp_path / "run", timeout=120)
    assert_clean_failure(result, "img_3.png")
    assert "not a regular file" in result.stderr and seconds < 120


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_link_to_a_device_file_is_refused_within_the_memory_limit(device, tmp_path, tiny_model):
    data = dataset_with_test_part(tmp_path)
    image = data / "test" / "images" / "img_2.png"
    image.unlink()
    image.symlink_to(device)
    result, _ = evaluate(data, tiny_model, tmp_path / "run")
    assert_clean_failure(result, "img_2.png")
    assert "not a regular file" in result.stderr and "MemoryError" not in result.stderr


def test_links_that_loop_beside_the_images_are_passed_over_and_a_listed_one_is_refused(tmp_path, tiny_model):
    data = dataset_with_test_part(tmp_path)
    images = data / "test" / "images"
    (images / "loopA").symlink_to(images / "loopB")
    (images / "loopB").symlink_to(images / "loopA")
    (images / "self").symlink_to(images)  # a link to a folder: the walk must not follow it round and round
    (images / "escape").symlink_to("/")   # nor out of the part
    result, seconds = evaluate(data, tiny_model, tmp_path / "run", timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    (images / "img_5.png").unlink()
    (images / "img_5.png").symlink_to(images / "loop5.png")
    (images / "loop5.png").symlink_to(images / "img_5.png")
    result, _ = evaluate(data, tiny_model, tmp_path / "run2")
    assert_clean_failure(result, "img_5.png")


def test_a_link_to_a_regular_picture_elsewhere_is_read(tmp_path, tiny_model):
    data = dataset_with_test_part(tmp_path)
    outside = tmp_path / "elsewhere.png"
    (data / "test" / "images" / "img_1.png").rename(outside)
    (data / "test" / "images" / "img_1.png").symlink_to(outside)
    result, _ = evaluate(data, tiny_model, tmp_path / "run")
    assert result.returncode == 0, result.stderr


# -- 2. names and CSV files written by other systems -------------------------------------------------------
def accented_part(tmp_path: Path, file_form: str, csv_form: str, encoding: str = "utf-8", sep: str = ",",
                  bom: bool = False) -> Path:
    """A test part whose image names carry accents: the files named in ``file_form`` (NFC or NFD), the CSV in
    ``csv_form``, saved in ``encoding`` with ``sep``."""
    x, y = digits()
    part = tmp_path / "data" / "test"
    (part / "images").mkdir(parents=True)
    rows = [f"filename{sep}label"]
    for i in range(6):
        name = f"chiffre_été_{i}.png"
        (part / "images" / unicodedata.normalize(file_form, name)).write_bytes(png_bytes(x[i]))
        rows.append(f"{unicodedata.normalize(csv_form, name)}{sep}{int(y[i])}")
    text = "\r\n".join(rows) + "\r\n"
    (part / "test.csv").write_bytes(("\ufeff" if bom else "").encode(encoding) + text.encode(encoding))
    return tmp_path / "data"


@pytest.mark.parametrize("file_form, csv_form", [("NFD", "NFC"), ("NFC", "NFD")])
def test_names_match_whichever_unicode_form_the_files_and_the_csv_use(file_form, csv_form, tmp_path, tiny_model):
    result, _ = evaluate(accented_part(tmp_path, file_form, csv_form), tiny_model, tmp_path / "run")
    assert result.returncode == 0, result.stderr


def test_a_windows_1252_csv_is_read_with_a_note(tmp_path, tiny_model):
    result, _ = evaluate(accented_part(tmp_path, "NFC", "NFC", "cp1252"), tiny_model, tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "note: test.csv in" in result.stderr and "read as Windows-1252" in result.stderr


def test_excels_unicode_text_is_read_with_a_note(tmp_path, tiny_model):
    """UTF-16 with a byte-order mark, tab-separated: what Excel saves as "Unicode text"."""
    data = accented_part(tmp_path, "NFC", "NFC", "utf-16-le", "\t", bom=True)
    result, _ = evaluate(data, tiny_model, tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "UTF-16" in result.stderr


def test_a_utf8_csv_with_a_byte_order_mark_is_read_quietly(tmp_path, tiny_model):
    result, _ = evaluate(accented_part(tmp_path, "NFC", "NFC", bom=True), tiny_model, tmp_path / "run")
    assert result.returncode == 0 and "note: test.csv" not in result.stderr, result.stderr


# -- 3. two runs into one folder --------------------------------------------------------------------------
def start_training(data: Path, out: Path, epochs: str = "3") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), "--data", str(data), "--train", "--epochs", epochs,
                             "--batch-size", "32", "--val-size", "50", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))


def wait_for_lock(out: Path, proc: subprocess.Popen) -> None:
    lock, deadline = out / ".lock", time.time() + 300
    while not (lock.is_file() and lock.read_text().strip() == str(proc.pid)) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def test_a_second_run_into_a_folder_in_use_is_refused_and_the_first_one_keeps_its_results(tiny_data, tmp_path):
    out = tmp_path / "shared"
    first = start_training(tiny_data, out)
    wait_for_lock(out, first)
    second = run_limited("--data", tiny_data, "--train", "--epochs", "1", "--out", out)
    assert_clean_failure(second, f"is in use by process {first.pid}")
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert (out / "model.pt").is_file() and (out / "metrics.json").is_file()
    assert (out / ".lock").read_text() == ""  # released: the next run takes the folder without a word
    again = run_limited("--data", tiny_data, "--model", out / "model.pt", "--out", out)
    assert again.returncode == 0 and "note: the run folder" not in again.stderr, again.stderr


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(tiny_data, tmp_path, tiny_model):
    out = tmp_path / "orphan"
    killed = start_training(tiny_data, out, epochs="50")
    wait_for_lock(out, killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    result = run_limited("--data", tiny_data, "--model", tiny_model, "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"held by process {killed.pid}, which ended without finishing; taking it over" in result.stderr


# -- 4. places that cannot be written -----------------------------------------------------------------------
@pytest.fixture
def read_only(tmp_path):
    """A read-only mount (a bind mount of an empty folder), or a skip where mounting is not permitted."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("mounting a read-only file system is not permitted here")
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_the_graders_command_in_a_read_only_folder_prints_every_result_with_a_note(read_only, tiny_data):
    saved = tree_hash(ROOT / "saved_models")
    result = run_limited("--data", tiny_data, cwd=read_only)  # the default run folder: runs/... in the cwd
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: cannot write")]
    assert len(notes) == 1 and "--out DIR" in notes[0]
    assert "test set metrics" in result.stdout and "confusion matrix" in result.stdout
    assert "results:" not in result.stdout and tree_hash(ROOT / "saved_models") == saved


def test_training_into_a_read_only_folder_stops_before_it_starts(read_only, tiny_data):
    started = time.time()
    result = run_limited("--data", tiny_data, "--train", "--out", read_only / "run")
    assert_clean_failure(result, "cannot write to the output folder")
    assert not re.search(r"^epoch +1/", result.stdout, re.MULTILINE) and time.time() - started < 120  # no epoch ran
