"""Keep freed memory in the process instead of handing it back to the operating system.

glibc's malloc serves blocks of 128 KB or more with fresh ``mmap`` pages and unmaps them on
free, so every training step faults its activation buffers (a few MB each) in again. Raising
the mmap threshold to its maximum (32 MB) and the trim threshold to 1 GB lets malloc reuse
those blocks. It changes the whole process, so only the command-line entry points call it (the
root script and ``python -m mobilenet_lab``), first thing; the library itself never does.
``python -m mobilenet_lab bench --sections malloc`` measures training with and without it
(docs/benchmarks.md). Elsewhere than glibc this does nothing; so does the environment variable
``MOBILENET_LAB_MALLOC=default``."""
import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 1024 * 1024 * 1024


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says, once per process; True when it took effect."""
    if os.environ.get("MOBILENET_LAB_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
