"""One exception type for problems the user can fix, and one place that reports notes."""
from __future__ import annotations

import sys


class UserError(Exception):
    """Bad input or a failed precondition the user can fix.

    The root script prints its message as one line, without a traceback, and exits with
    status 2. The message says what is wrong and how to fix it.
    """


class Interrupted(Exception):
    """Ctrl-C stopped a run; the message says what was kept and how to go on."""


def note(message: str) -> None:
    """Print a one-line note for the user on stderr (never mixed into printed results)."""
    print(f"note: {message}", file=sys.stderr, flush=True)


def run_cli(main, *args) -> int:
    """Run a command-line entry point: a UserError becomes one line on stderr and exit status 2,
    Ctrl-C exit status 130; neither prints a traceback."""
    try:
        return main(*args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted: nothing was saved by this run", file=sys.stderr)
        return 130
