"""What every command-line tool here shares: its parser over the settings dataclasses, and what it does with a
failure the user caused (one ``error:`` line, exit code 2).

Light on purpose: nothing here imports torch or diffusers, so ``--help`` answers at once.
"""

import argparse
import contextlib
import errno
import logging
import os
import signal
import sys
import threading
from typing import Dict, Iterator, Optional, Sequence, Tuple


logger = logging.getLogger(__name__)

# Bad arguments and files (ValueError and its subclasses), paths that cannot be read or written,
# a full disk, an unreachable Hub (OSError and its subclasses).
USER_ERRORS = (ValueError, OSError)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written (usage examples keep their lines), every flag with its default."""


def parse_settings(
    dataclass_types: Sequence[type],
    argv: Optional[Sequence[str]] = None,
    description: Optional[str] = None,
    renamed: Optional[Dict[str, str]] = None,
    defaults: Optional[dict] = None,
) -> Tuple:
    """The command line as instances of ``dataclass_types`` (transformers' ``HfArgumentParser``).

    Flags are the fields' names with underscores; ``renamed`` maps old spellings still accepted for one release
    to the new flag, each use logged as a deprecation warning. ``defaults`` overrides field defaults (e.g. a preset).
    A bad flag or value exits with argparse's usage line and code 2.
    """
    from transformers import HfArgumentParser  # lazy in transformers: torch is not imported

    parser = HfArgumentParser(list(dataclass_types), description=description, formatter_class=HelpFormatter)
    _drop_hyphen_aliases(parser)
    if defaults:
        parser.set_defaults(**defaults)
    args = renamed_flags(list(sys.argv[1:] if argv is None else argv), renamed or {}, parser)
    *parsed, remaining = parser.parse_args_into_dataclasses(
        args=args, return_remaining_strings=True, look_for_args_file=False
    )
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    return tuple(parsed)


def _drop_hyphen_aliases(parser: argparse.ArgumentParser) -> None:
    """HfArgumentParser also registers ``--num-samples`` for ``--num_samples``: keep one spelling, the underscore one."""
    for action in parser._actions:
        hyphenated = [o for o in action.option_strings if o.startswith("--") and "-" in o[2:]]
        for option_string in hyphenated:
            action.option_strings.remove(option_string)
            parser._option_string_actions.pop(option_string, None)


def renamed_flags(args: list, renamed: Dict[str, str], parser: argparse.ArgumentParser) -> list:
    """``args`` with old flag spellings replaced by the new ones, each replacement logged as deprecated.

    Besides ``renamed``, a hyphenated spelling (``--no-sdpa``) of an underscore flag (``--no_sdpa``) is accepted.
    """
    result = []
    for arg in args:
        flag, sep, value = arg.partition("=")
        new = renamed.get(flag)
        if new is None and flag.startswith("--") and "-" in flag[2:]:
            underscored = "--" + flag[2:].replace("-", "_")
            if underscored in parser._option_string_actions:
                new = underscored
        if new is not None:
            logger.warning("%s is deprecated and will be removed in the next release: use %s", flag, new)
            arg = new + sep + value
        result.append(arg)
    return result


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
