"""Writing files so that a failure never leaves half a file behind nor loses the one it replaces (every save goes
through :func:`atomic_write`), and holding a run folder so that two runs never write into the same one."""
import errno
import io
import json
import os
import shutil
from pathlib import Path

import torch

from .errors import UserError, note

try:
    import fcntl  # POSIX; elsewhere run folders are not locked
except ImportError:
    fcntl = None


def write_error(path: Path, exc: OSError, size: int) -> UserError:
    """The one-line error for a failed write, naming a full disk as such."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        return UserError(f"the disk is full: cannot write {path} ({size / 1e6:,.1f} MB needed, {free / 1e6:,.1f} MB "
                         f"free there): free some space or choose a folder on another disk")
    return UserError(f"cannot write {path} ({exc.strerror or exc}): choose a writable folder")


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``.NAME.tmp`` beside ``path``, then rename it over ``path``; a failed write removes it, and
    one a killed process left is overwritten by the next write."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
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


def save_torch(obj, path: str | Path) -> Path:
    """``torch.save`` into memory first, so that a failed write is an OSError that atomic_write names."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, buffer.getvalue())


def write_json(path: str | Path, obj) -> Path:
    return atomic_write(path, (json.dumps(obj, indent=1) + "\n").encode())


def hold_folder(folder: Path):
    """Create ``folder`` and hold it: a lock on its ``.lock`` file, which names this process. A second run into it is
    refused while this one lives; the kernel drops the lock however a process ends, and a lock file that still names
    a process is then taken over with a note. Returns the open lock file; OSError: the folder cannot be written."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / ".lock", "a+")
    lock.seek(0)
    holder = lock.read().strip()
    try:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise UserError(f"the run folder {folder} is in use by process {holder or '(unknown)'}: wait for that run to "
                        f"end, or choose another folder with --out DIR") from None
    if holder:
        note(f"the run folder {folder} was held by process {holder}, which ended without finishing; taking it over")
    lock.truncate(0)  # in "a+" mode, writes go to the end: now the start
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def release_folder(lock) -> None:
    """The run finished: empty the lock file (a later run then takes the folder without a note), drop the lock."""
    lock.truncate(0)
    lock.close()
