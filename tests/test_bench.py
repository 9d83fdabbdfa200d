"""The benchmark runs every section on a tiny dataset and writes its JSON; the reference recipe
is the PyTorch example's network; ``prepare --full`` keeps every training digit. No timing is
asserted: the figures only have to be measured (positive) and consistent with each other."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from mobilenet_lab.experiments import bench
from mobilenet_lab.experiments.measure import ROOT, time_to
from mobilenet_lab.experiments.reference import ReferenceNet
from mobilenet_lab.sample import load_sample_digits
from mobilenet_lab.tools.prepare import prepare


def run_bench(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = bench.main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny_bench(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    status, stdout, stderr = run_bench("--data", tiny_data, "--full-data", tiny_data, "--epochs", 2,
                                       "--reference-epochs", 1, "--steps", 2, "--eval-images", 40, "--rounds", 1,
                                       "--elastic", 0.5, "--shear", 10, "--checks", 3, "--against", ROOT,
                                       "--sections", ",".join(bench.SECTIONS), "--out", out)
    assert status == 0, stderr
    return json.loads(out.read_text()), stdout


def test_every_section_is_measured_and_written(tiny_bench):
    result, stdout = tiny_bench
    assert set(bench.SECTIONS) <= set(result)
    assert result["decode"]["images"] == 300 and result["decode"]["cold_images_per_second"] > 0
    assert 0 < result["decode"]["warm_seconds"]
    for preset in ("mobilenet", "conv4"):
        rates = result["throughput"]["presets"][preset]
        assert {"train | chosen: channels_last, batch 128", "train | contiguous memory", "train | 1 torch thread",
                "eval | chosen: folded BN", "eval | unfolded BN"} <= set(rates)
        assert all(rate > 0 for rate in rates.values())
    assert result["memory"]["this checkout"]["runs"][0]["peak_mb"] > 50  # torch alone takes more than this
    assert set(result["malloc"]) == {"glibc as it is", "glibc keeping freed memory"}
    assert set(result["compare"]) == {"this checkout", str(ROOT)}
    for section in ("malloc", "compare"):
        for variant in result[section].values():
            run = variant["runs"][0]
            assert run["images_per_second"] > 0 and 0 < run["data_seconds"] < run["step_seconds"]
    grader = result["grader"]
    assert [run["kind"] for run in grader["runs"]] == ["cold", "warm"]
    assert grader["cold_seconds"] > 0 and grader["warm_median_seconds"] > 0
    assert len({run["test_accuracy"] for run in grader["runs"]}) == 1  # cold and warm agree
    assert "grader: cold" in stdout and "results:" in stdout


def test_the_race_records_each_check_for_both_recipes(tiny_bench):
    race = tiny_bench[0]["accuracy"]
    assert race["sizes"] == {"train": 300, "test": 100} and race["checks_per_epoch"] == 3
    assert race["recipe"]["epochs"] == 2 and len(race["recipe"]["test_acc"]) == 2
    assert race["reference"]["parameters"] == 1_199_882  # the example's network
    assert race["recipe"]["config"]["elastic"] == 0.5 and race["recipe"]["config"]["shear"] == 10  # the flags reach it
    for recipe in ("recipe", "reference"):
        record = race[recipe]
        assert 0 <= record["data_wait_share"] <= 1
        assert all(0 < d <= s for d, s in zip(record["data_seconds"], record["step_seconds"]))
        checks = record["checks"]  # 3 a epoch: 300 images make 3 steps of the default's batch, 5 of the reference's
        assert len(checks) == 3 * record["epochs"]
        assert [c["epoch"] for c in checks][2::3] == list(range(1, record["epochs"] + 1))
        assert all(a["seconds"] < b["seconds"] for a, b in zip(checks, checks[1:]))
        ends = checks[2::3]  # each epoch's last check is its end-of-epoch test pass
        assert [c["accuracy"] for c in ends] == pytest.approx(record["test_acc"])
        assert ends[-1]["seconds"] == pytest.approx(sum(record["seconds"]))
        for target, seconds in record["time_to"].items():  # reached at the first check at or above target
            hit = [c["seconds"] for c in checks if c["accuracy"] >= float(target)]
            assert seconds == (hit[0] if hit else None)


def test_reference_net_is_the_pytorch_example():
    net = ReferenceNet()
    out = net(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.allclose(out.exp().sum(1), torch.ones(2))  # log-softmax
    assert net.fc1.in_features == 9216 and net.fc1.out_features == 128


def test_time_to_reads_the_first_check_at_target():
    checks = [{"accuracy": a, "seconds": s} for a, s in ((0.98, 10.0), (0.991, 30.0), (0.989, 45.0), (0.996, 60.0))]
    assert time_to(checks, 0.99) == 30.0
    assert time_to(checks, 0.995) == 60.0
    assert time_to(checks[:1], 0.99) is None


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent/mnist"], "does not exist"),
    (["--sections", "decode,speed"], "unknown section speed"),
    (["--steps", "0"], "at least 1"),
    (["--elastic", "9"], "--elastic 9 must be between 0 and 4"),
    (["--shear", "50"], "--shear 50 must be between 0 and 45"),
    (["--sections", "compare", "--against", "/nonexistent"], "not a checkout of this project"),
])
def test_bad_arguments_give_one_line(tiny_data, args, message):
    if args[0] != "--data":
        args = ["--data", str(tiny_data), *args]
    status, stdout, stderr = run_bench(*args)
    assert status == 2 and message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_prepare_full_keeps_every_training_digit(tmp_path):
    summary = prepare(tmp_path, full=True)
    _, y = load_sample_digits()
    assert sum(summary["train_counts"]) == len(y) - 1000 and summary["imbalance"] is None
    assert sum(summary["test_counts"]) == 1000
    natural = prepare(tmp_path / "imbalanced")
    assert sum(natural["train_counts"]) < sum(summary["train_counts"])
    assert max(natural["train_counts"]) / min(natural["train_counts"]) > 5  # capped by what the sample has
