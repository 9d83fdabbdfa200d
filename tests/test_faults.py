"""Faults, hostile files and resource-exhausting arguments: each case gets one 'error:' line (or a note when
only speed is lost), exit status 2, bounded memory, no debris, and the saved models stay byte-identical.

Real mechanisms where the machine allows them: a small tmpfs for a full disk (skipped where mounting is
not permitted), SIGKILL of a real process in the middle of a write, damaged cache files, an address-space
limit on every process that must refuse its input before reading it.
"""
from __future__ import annotations

import gzip
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from helpers import digits, tree_hash, write_folder_part
from test_cli import ROOT, SCRIPT, assert_clean_failure, run_here

MEMORY_LIMIT = 6 * 2**30  # address space; importing torch alone takes about 3.5 GB of it


# With FAULT_PEAKS=FILE, each capped process appends its peak resident memory (VmHWM, its own since exec) there.
PEAK_WRAPPER = """import atexit, os, runpy, sys
def peak():
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
    with open(os.environ["FAULT_PEAKS"], "a") as log:
        log.write(os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0] + "\\t" + str(int(hwm) // 1024) + "\\n")
atexit.register(peak)
target, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(target[3:], run_name="__main__", alter_sys=True) if target.startswith("-m:") else runpy.run_path(
    target, run_name="__main__")
"""


def run_limited(*args, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The root script (or ``-m mobilenet_lab ...``) as a process whose address space is capped."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    module = args[0] == "-m"
    target = ["-m", "mobilenet_lab", *args[1:]] if module else [str(SCRIPT), *args]
    if os.environ.get("FAULT_PEAKS"):
        target = ["-c", PEAK_WRAPPER, "-m:mobilenet_lab" if module else target[0], *target[2 if module else 1:]]
    return subprocess.run([str(a) for a in [sys.executable, *target]], capture_output=True, text=True, timeout=600,
                          preexec_fn=cap, cwd=cwd or ROOT, env=dict(os.environ, PYTHONWARNINGS="ignore", **(env or {})))


def no_debris(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture
def saved_models_unchanged():
    before = tree_hash(ROOT / "saved_models")
    yield
    assert tree_hash(ROOT / "saved_models") == before


@pytest.fixture
def tmpfs(tmp_path):
    """A 6 MB tmpfs, or a skip where mounting is not permitted."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def fill(folder: Path, leave: int) -> None:
    """Fill a file system until only about ``leave`` bytes are free."""
    free = shutil.disk_usage(folder).free - leave
    if free > 0:
        (folder / "filler").write_bytes(b"\0" * free)


# -- 1. a full disk ----------------------------------------------------------------------------
def test_a_full_disk_at_the_checkpoint_is_one_line_and_leaves_nothing_behind(tmpfs, tiny_data, saved_models_unchanged):
    (tmpfs / "run").mkdir()
    (tmpfs / "run" / "notes.txt").write_text("kept")
    fill(tmpfs, 200_000)  # room for metrics, not for a 0.6 MB checkpoint
    result = run_limited("--data", tiny_data, "--train", "--epochs", "1", "--out", tmpfs / "run")
    assert_clean_failure(result, "the disk is full")
    assert str(tmpfs / "run") in result.stderr and no_debris(tmpfs) == []
    assert (tmpfs / "run" / "notes.txt").read_text() == "kept"


def test_a_full_disk_at_the_final_save_keeps_the_previous_model(tmpfs, tiny_data, tmp_path, saved_models_unchanged):
    target = tmpfs / "model.pt"
    target.write_bytes(b"the previous model")
    fill(tmpfs, 50_000)
    result = run_limited("--data", tiny_data, "--train", "--epochs", "1", "--out", tmp_path / "run", "--model", target)
    assert_clean_failure(result, "the disk is full")
    assert target.read_bytes() == b"the previous model" and no_debris(tmpfs) == []


def test_a_cache_that_cannot_be_written_only_costs_speed(tmpfs, tiny_data, tmp_path):
    fill(tmpfs, 10_000)
    result = run_limited("--data", tiny_data, "--model", ROOT / "saved_models" / "mobilenet.pt", "--out",
                         tmp_path / "run", env={"MOBILENET_LAB_CACHE": str(tmpfs / "cache")})
    assert result.returncode == 0, result.stderr
    assert "note: the decode cache was not written (the disk is full" in result.stderr and no_debris(tmpfs) == []


def test_a_write_killed_midway_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "checkpoint-best.pt"
    child = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time; sys.path.insert(0, sys.argv[1]); from mobilenet_lab import files\n"
        "os.replace = lambda *a: time.sleep(60)  # the rename never comes: killed first\n"
        "files.atomic_write(sys.argv[2], b'x' * 1000)"), str(ROOT), str(target)])
    deadline = time.time() + 60
    while not no_debris(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert no_debris(tmp_path) == [f".{target.name}.tmp"]
    from mobilenet_lab.files import atomic_write
    atomic_write(target, b"whole")
    assert target.read_bytes() == b"whole" and no_debris(tmp_path) == []


# -- 2. the decode cache verifies every entry ---------------------------------------------------
@pytest.mark.parametrize("damage", ["garbled", "pixels-changed", "shapes"])
def test_a_damaged_cache_entry_is_rebuilt_with_a_note(damage, tmp_path, monkeypatch, capsys):
    from mobilenet_lab.reading import decode_part
    x, y = digits()
    part = write_folder_part(tmp_path, x[:30], y[:30], zip_path=tmp_path / "train.zip")
    monkeypatch.setenv("MOBILENET_LAB_CACHE", str(tmp_path / "cache"))
    first = decode_part(part, (1, 28, 28))
    entry = next((tmp_path / "cache" / "decoded").glob("*.pt"))
    if damage == "garbled":
        raw = bytearray(entry.read_bytes())
        raw[len(raw) // 2:len(raw) // 2 + 64] = os.urandom(64)
        entry.write_bytes(bytes(raw))
    else:
        stored = torch.load(entry, weights_only=True)
        if damage == "pixels-changed":
            stored["x"][0, 0, 10, 10] ^= 255
        else:
            stored["x"] = stored["x"][:10]
        torch.save(stored, entry)
    capsys.readouterr()
    again = decode_part(part, (1, 28, 28))
    assert "decode cache entry" in capsys.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(again[:2], first[:2]))


# -- 3. hostile images and archives ---------------------------------------------------------------
def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_png_is_refused_from_its_header(tmp_path, tiny_model, saved_models_unchanged):
    x, y = digits()
    part = write_folder_part(tmp_path / "data" / "test", x[:5], y[:5], image_dir="images", csv_name="test.csv")
    (part / "images" / "img_2.png").write_bytes(png_claiming(30000, 30000))
    result = run_limited("--data", tmp_path / "data", "--model", tiny_model, "--out", tmp_path / "run")
    assert_clean_failure(result, "more than 50,000,000 pixels")
    assert "img_2.png" in result.stderr
    (tmp_path / "bomb.png").write_bytes(png_claiming(30000, 30000))
    assert run_limited("-m", "predict", tmp_path / "bomb.png", "--model", tiny_model).returncode == 2


def test_a_csv_that_inflates_past_the_limit_is_refused_from_the_zip_directory(tmp_path, tiny_model):
    data = tmp_path / "data"
    data.mkdir()
    with zipfile.ZipFile(data / "test.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("test.csv", "w", force_zip64=True) as fh:  # 70 MB of rows, about 70 KB zipped
            for _ in range(70):
                fh.write(b"img.png,1\n" * 104_858)
        zf.writestr("images/img.png", b"x")
    started = time.time()
    result = run_limited("--data", data, "--model", tiny_model, "--out", tmp_path / "run")
    assert_clean_failure(result, "more than the 64 MB allowed for a label table")
    assert time.time() - started < 60


def test_a_huge_sparse_file_listed_as_an_image_is_refused_unread(tmp_path, tiny_model):
    x, y = digits()
    part = write_folder_part(tmp_path / "data" / "test", x[:5], y[:5], image_dir="images", csv_name="test.csv")
    with open(part / "images" / "img_1.png", "r+b") as fh:
        fh.truncate(8 * 2**30)  # 8 GiB that take no disk
    result = run_limited("--data", tmp_path / "data", "--model", tiny_model, "--out", tmp_path / "run")
    assert_clean_failure(result, "8.0 GB, more than the 64 MB allowed for a picture")
    assert run_limited("-m", "predict", part / "images" / "img_1.png", "--model", tiny_model).returncode == 2


# -- 4. values outside any sane range ---------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--input-dim", "1,100000,100000"], "--input-dim 1,100000,100000 must have 1 (grayscale) or 3 (RGB) channels"),
    (["--num-classes", "100000"], "--num-classes 100000 must be between 2 and 1000"),
    (["--mobilenet-block-count", "100000"], "--mobilenet-block-count 100000 must be between 0 and 64"),
    (["--seed", "-1"], "--seed -1 must be between 0 and 4294967295"),
])
def test_arguments_outside_their_range_are_refused_before_any_work(args, message, tiny_data, tmp_path):
    result = run_limited("--data", tiny_data, "--train", *args, "--out", tmp_path / "run")
    assert_clean_failure(result, message)
    assert not (tmp_path / "run").exists()


def test_a_run_that_cannot_fit_in_memory_is_one_line(tiny_data, tmp_path, saved_models_unchanged):
    result = run_limited("--data", tiny_data, "--train", "--batch-size", "8192", "--input-dim", "3,1024,1024",
                         "--mobilenet-block-count", "20", "--out", tmp_path / "run")
    assert_clean_failure(result, "needs more memory than the machine can give it")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_label_of_ten_to_the_thirty_is_refused(tmp_path, tiny_model):
    x, y = digits()
    part = write_folder_part(tmp_path / "data" / "test", x[:5], y[:5], image_dir="images", csv_name="test.csv")
    (part / "test.csv").write_text((part / "test.csv").read_text().replace(f"img_3.png,{y[3]}", "img_3.png," + "1" + "0" * 30))
    assert_clean_failure(run_here("--data", tmp_path / "data", "--model", tiny_model, "--out", tmp_path / "r"),
                         "labels must be class numbers")


# -- 6. messages that say what is there -----------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "WEBP"])
def test_gif_tiff_and_webp_images_are_read(fmt, tmp_path, tiny_model):
    from PIL import Image
    x, y = digits()
    part = write_folder_part(tmp_path / "data" / "test", x[:6], y[:6], image_dir="images", csv_name="test.csv")
    (part / "images" / "img_4.png").unlink()
    Image.fromarray(x[4]).save(part / "images" / f"img_4.{fmt.lower()}", fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    (part / "test.csv").write_text((part / "test.csv").read_text().replace("img_4.png", f"img_4.{fmt.lower()}"))
    result = run_here("--data", tmp_path / "data", "--model", tiny_model, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("separator", [";", "\t"])
def test_semicolon_and_tab_separated_csvs_are_read(separator, tmp_path, tiny_model):
    x, y = digits()
    part = write_folder_part(tmp_path / "data" / "test", x[:6], y[:6], image_dir="images", csv_name="test.csv")
    (part / "test.csv").write_text((part / "test.csv").read_text().replace(",", separator))
    assert run_here("--data", tmp_path / "data", "--model", tiny_model, "--out", tmp_path / "run").returncode == 0


def test_a_megabyte_long_name_is_cut_in_the_error_line(tmp_path, tiny_model):
    x, y = digits()
    part = write_folder_part(tmp_path / "data" / "test", x[:5], y[:5], image_dir="images", csv_name="test.csv")
    (part / "test.csv").write_text((part / "test.csv").read_text() + "n" * 1_000_000 + ".png,3\n")
    result = run_here("--data", tmp_path / "data", "--model", tiny_model, "--out", tmp_path / "run")
    assert_clean_failure(result, "are missing")
    assert max(len(line) for line in result.stderr.splitlines()) < 400 and "1,000,004 characters" in result.stderr


def test_an_architecture_flag_that_contradicts_the_model_is_refused(tiny_data, tmp_path):
    result = run_here("--data", tiny_data, "--arch", "conv4", "--model", ROOT / "saved_models" / "mobilenet.pt",
                      "--out", tmp_path / "run")
    assert_clean_failure(result, "has arch mobilenet, not --arch conv4")


# -- 7. prepare on damaged IDX files ----------------------------------------------------------------------
def idx_folder(folder: Path, images: bytes | None = None, labels_count: int = 20) -> Path:
    x, y = digits()
    folder.mkdir()
    header = lambda shape: bytes([0, 0, 8, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)  # noqa: E731
    for stem in ("train", "t10k"):
        (folder / f"{stem}-images-idx3-ubyte.gz").write_bytes(
            images if images is not None else gzip.compress(header((20, 28, 28)) + x[:20].tobytes()))
        (folder / f"{stem}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header((labels_count,)) + bytes(labels_count)))
    return folder


@pytest.mark.parametrize("damage, message", [
    ("truncated", "is damaged (EOFError"),
    ("255-dimensions", "with 1 to 4 dimensions"),
    ("bomb", "more than the 512 MB allowed"),
    ("counts", "disagree"),
])
def test_prepare_refuses_damaged_idx_files(damage, message, tmp_path):
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (20, 28, 28))
    images = {"truncated": gzip.compress(header + bytes(5000))[:-40], "255-dimensions": gzip.compress(bytes([0, 0, 8, 255])),
              "bomb": gzip.compress(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (100000, 300, 300))),
              "counts": None}[damage]
    folder = idx_folder(tmp_path / "idx", images, labels_count=7 if damage == "counts" else 20)
    result = run_limited("-m", "prepare", "--out", tmp_path / "out", "--idx", folder)
    assert_clean_failure(result, message)
    assert not (tmp_path / "out").exists() or no_debris(tmp_path / "out") == []


# -- 8. the demo server's log -------------------------------------------------------------------------------
def test_a_client_that_resets_its_connection_is_one_log_line(tiny_model, capfd):
    from mobilenet_lab.tools.demo import make_server
    from mobilenet_lab.tools.predict import Classifier
    server = make_server(Classifier.from_file(tiny_model), "127.0.0.1", 0, str(tiny_model))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for _ in range(3):
            sock = socket.create_connection(server.server_address[:2])
            sock.sendall(b"POST /api/predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\nabc")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            sock.close()
        time.sleep(1)
    finally:
        server.shutdown()
        server.server_close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ConnectionResetError" not in err.replace("disconnected (ConnectionResetError", "")
