"""What every command-line tool here does with a failure the user caused: one ``error:`` line, exit code 2."""

import contextlib
import errno
import os
import signal
import sys
import threading
from typing import Iterator

# Bad arguments and files (ValueError and its subclasses), paths that cannot be read or written,
# a full disk, an unreachable Hub (OSError and its subclasses).
USER_ERRORS = (ValueError, OSError)


def describe(err: BaseException) -> str:
    """The error as one line; a full disk or a refused path said in words."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" while writing {err.filename}" if err.filename else ""
        return f"no space left on the device{where}: free some space or write elsewhere (nothing was replaced)"
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines) or type(err).__name__


def report(err: BaseException) -> int:
    print(f"error: {describe(err)}", file=sys.stderr)
    return 2


def check_writable_location(path: str, what: str = "output folder", error: type = ValueError) -> None:
    """Fails now, before any slow work, when the folder ``path`` could not be created or written."""
    if not path or not path.strip():
        raise error(f"the {what} is empty (an unset variable?): name a folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise error(f"cannot write the {what} {path}: it is a file, not a folder")
    ancestor = os.path.abspath(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise error(f"cannot create the {what} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise error(f"cannot write the {what} {path}: {ancestor} is not writable")


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM unwinds the stack as Ctrl-C does, so ``finally`` blocks remove staging folders (exit code 143)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
