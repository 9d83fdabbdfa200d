"""Measuring helpers shared by the benchmark, the report's runs and the seeds study: what machine a figure came from, a
command run as its own process (wall time, peak memory), and call latencies."""
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..evaluation import eval_mode


ROOT = Path(__file__).resolve().parents[2]
# Runs a Python script and, at exit, prints its peak resident memory (VmHWM, reset by exec) on
# stderr. A child's ru_maxrss would start from the size of the parent it was forked from.
_PEAK_WRAPPER = ("import atexit, runpy, sys\n"
                 "def peak():\n"
                 "    try:\n"
                 "        kb = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
                 "        print(f'peak-rss-kib {kb}', file=sys.stderr)\n"
                 "    except (OSError, IndexError):\n"
                 "        pass\n"
                 "atexit.register(peak)\n"
                 "sys.argv = sys.argv[1:]\n"
                 "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def cpu_flags() -> set[str]:
    """This CPU's feature flags from /proc/cpuinfo (Linux only; elsewhere none)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(flags.split(":", 1)[1].split())


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def machine() -> dict:
    """Where a figure was measured: CPU model, cores, torch threads and version, the bf16 flags."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__.split("+")[0], "python": platform.python_version(),
            "bf16_flags": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile"}),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_process(cmd: list[str], env: dict | None = None, peak: bool = False) -> dict:
    """Run ``cmd`` (a Python script and its arguments when ``peak``) to the end: wall seconds, exit status, output, and
    with ``peak`` its peak resident memory in MB (None where /proc is missing)."""
    if peak:
        cmd = [sys.executable, "-c", _PEAK_WRAPPER, *cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        returncode = subprocess.run(cmd, stdout=out, stderr=err, env=env, cwd=ROOT).returncode
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        result = {"seconds": seconds, "returncode": returncode, "stdout": out.read().decode(errors="replace"),
                  "stderr": err.read().decode(errors="replace")}
    peaks = [line.split()[1] for line in result["stderr"].splitlines() if line.startswith("peak-rss-kib ")]
    result["peak_mb"] = int(peaks[-1]) / 1024 if peaks else None
    return result


def call_times_ms(module, x, repeats: int, warmup: int = 3) -> list[float]:
    """Sorted wall times in milliseconds of ``repeats`` inference calls, after ``warmup`` calls."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            started = time.perf_counter()
            module(x)
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def latency(net, iterations: int = 200, warmup: int = 20) -> dict:
    """Milliseconds for one image through ``net`` on the CPU (batch 1, after warm-up): median, mean, 90th percentile."""
    x = torch.randint(0, 256, (1, *net.architecture.input_dim), dtype=torch.uint8).contiguous(
        memory_format=torch.channels_last)
    with eval_mode(net.cpu()):
        times = call_times_ms(net, x, iterations, warmup)
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "p90_ms": times[int(0.9 * (len(times) - 1))], "iterations": iterations, "threads": torch.get_num_threads()}


def time_to(checks: list[dict], target: float) -> float | None:
    """Seconds of training and testing until the first check whose accuracy reaches ``target``."""
    return next((c["seconds"] for c in checks if c["accuracy"] >= target), None)


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
