"""One exception type for problems the user can fix, and one place that reports them."""
import argparse
import sys


class UserError(Exception):
    """Bad input or a failed precondition the user can fix: printed as one line, exit status 2."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """Ctrl-C stopped a run; the message says what was kept and how to go on."""


class Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one line on stderr, exit status 2, no usage dump."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def note(message: str) -> None:
    """A one-line note for the user on stderr (never mixed into printed results)."""
    print(f"note: {message}", file=sys.stderr, flush=True)


def quoted(text, limit: int = 60) -> str:
    """``text`` in quotes, cut to ``limit`` characters: a hostile file can hold a megabyte-long name."""
    text = str(text)
    return f"'{text}'" if len(text) <= limit else f"'{text[:limit]}...' ({len(text):,} characters)"


def run_cli(main, *args) -> int:
    """Run a command-line entry point: a UserError or a failed allocation becomes one line on stderr and exit status
    2, Ctrl-C exit status 130; neither prints a traceback."""
    try:
        return main(*args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except (MemoryError, RuntimeError) as exc:  # torch reports a failed allocation as a RuntimeError
        if not isinstance(exc, MemoryError) and "allocate" not in str(exc):
            raise
        print("error: this run needs more memory than the machine can give it: choose a smaller --batch-size or "
              "--input-dim, or fewer blocks", file=sys.stderr)
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted: nothing was saved by this run", file=sys.stderr)
        return 130
    return 2
