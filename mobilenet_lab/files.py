"""Writing files so that a failure never leaves half a file behind nor loses the one it replaces.

Every save in the project goes through :func:`atomic_write`: the bytes go to a temporary file in the target's folder,
which is then renamed over the target. A failed write removes its temporary file, and a full disk is named as such.
Temporary files that a killed process left behind are removed by the next write to the same target."""
import errno
import io
import json
import os
import shutil
from pathlib import Path

import torch

from .errors import UserError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Delete ``.NAME.<pid>.tmp`` files next to ``path`` whose process is gone (it was killed mid-write)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return
    prefix = f".{path.name}."
    for old in path.parent.glob(".*.tmp"):
        pid = old.name[len(prefix):-len(".tmp")]
        if old.name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            old.unlink(missing_ok=True)


def write_error(path: Path, exc: OSError, size: int | None = None) -> UserError:
    """The one-line error for a failed write, naming a full disk as such."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f"{shutil.disk_usage(path.parent).free / 1e6:,.1f} MB free"
        except OSError:
            free = "no space left"
        need = f"{size / 1e6:,.1f} MB needed, " if size else ""
        return UserError(f"the disk is full: cannot write {path} ({need}{free} there): free some space or "
                         f"choose a folder on another disk")
    return UserError(f"cannot write {path} ({exc.strerror or exc}): choose a writable folder")


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (see the module docstring)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise write_error(path, exc, len(data)) from None
    return path


def torch_bytes(obj) -> bytes:
    """``torch.save`` into memory: the write itself then fails with an OSError a caller can name."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_torch(obj, path: str | Path) -> Path:
    return atomic_write(path, torch_bytes(obj))


def write_json(path: str | Path, obj) -> Path:
    return atomic_write(path, (json.dumps(obj, indent=1) + "\n").encode())
