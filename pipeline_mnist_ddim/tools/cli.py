"""What every command-line tool here shares: its parser over the settings dataclasses, and what it does with a
failure the user caused (one ``error:`` line, exit code 2).

Light on purpose: nothing here imports torch, diffusers or transformers, so ``--help`` answers at once. The
command-line language is that of transformers' ``HfArgumentParser`` (``tests/test_cli_parser.py`` holds the two
to the same results), but built here: importing the ``transformers`` package alone takes about a second (0.9-1.1 s
measured with ``python -X importtime``, most of ``--help``'s 1.2-1.7 s), for a few dozen lines of argparse.
"""

import argparse
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import sys
import threading
import typing
from typing import Callable, Iterator, Literal, Optional, Sequence, Tuple

from pipeline_mnist_ddim.conversion.errors import describe, error_line, terminal_safe


logger = logging.getLogger(__name__)

# Bad arguments and files (ValueError and its subclasses), paths that cannot be read or written,
# a full disk, an unreachable Hub (OSError and its subclasses).
USER_ERRORS = (ValueError, OSError)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written (usage examples keep their lines), every flag with its default."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, its usage errors (which quote the bad value) printed terminal-safe as ours are."""

    def error(self, message: str):
        super().error(terminal_safe(message))


def parse_settings(
    dataclass_types: Sequence[type],
    argv: Optional[Sequence[str]] = None,
    description: Optional[str] = None,
    defaults: Optional[dict] = None,
) -> Tuple:
    """The command line as instances of ``dataclass_types``.

    Flags are the fields' names with underscores. ``defaults`` overrides field defaults (e.g. a preset).
    A bad flag or value exits with argparse's usage line and code 2.
    """
    parser = build_parser(dataclass_types, description)
    if defaults:
        parser.set_defaults(**defaults)
    return into_dataclasses(parser.parse_args(sys.argv[1:] if argv is None else argv), dataclass_types)


def build_parser(dataclass_types: Sequence[type], description: Optional[str] = None) -> argparse.ArgumentParser:
    """One ``--field_name`` flag per field, as ``HfArgumentParser`` makes it (without its ``--field-name`` aliases).

    ``Optional[X]`` parses as X (its default may be None); ``Literal`` gives choices; ``List[X]`` takes one or more
    values; a bool takes an optional value (``--flag``, ``--flag false``) and, when True by default, has a
    ``--no_flag`` complement. Field metadata (``help``, ``choices``, ``metavar``, ``required``) goes to argparse as is.
    """
    parser = ArgumentParser(description=description, formatter_class=HelpFormatter)
    for dataclass_type in dataclass_types:
        hints = typing.get_type_hints(dataclass_type)
        for field in dataclasses.fields(dataclass_type):
            if not field.init:
                continue
            kind = hints[field.name]
            if typing.get_origin(kind) is typing.Union and len(kind.__args__) == 2 and type(None) in kind.__args__:
                # Optional[X] parses as X; Optional[bool], which HfArgumentParser reads otherwise, is refused below
                inner = next(arg for arg in kind.__args__ if arg is not type(None))
                kind = kind if inner is bool else inner
            origin, args = typing.get_origin(kind), typing.get_args(kind)
            kwargs = dict(field.metadata)
            if field.default is not dataclasses.MISSING:
                kwargs["default"] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                kwargs["default"] = field.default_factory()
            elif kind is not bool:  # a bool without a default is False
                kwargs["required"] = True

            if origin is Literal:
                kwargs.update(choices=args, type=_choice_type(args))
            elif kind is bool:
                kwargs.update(type=_truth_value, nargs="?", const=True, default=kwargs.get("default", False))
            elif origin is list and args[0] in (int, float, str):
                kwargs.update(type=args[0], nargs="+")
            elif kind in (int, float, str):
                kwargs["type"] = kind
            else:
                raise TypeError(f"{dataclass_type.__name__}.{field.name}: no command-line form for {kind}")
            parser.add_argument(f"--{field.name}", **kwargs)
            if kind is bool and field.default is True:
                complement = {**field.metadata, "default": False}
                parser.add_argument(f"--no_{field.name}", action="store_false", dest=field.name, **complement)
    return parser


def into_dataclasses(namespace: argparse.Namespace, dataclass_types: Sequence[type]) -> Tuple:
    """The parsed values, one instance of each of ``dataclass_types``, in their order."""
    values = vars(namespace)
    return tuple(
        dataclass_type(
            **{field.name: values[field.name] for field in dataclasses.fields(dataclass_type) if field.init}
        )
        for dataclass_type in dataclass_types
    )


def _truth_value(text: str) -> bool:
    if text.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if text.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(
        f"Truthy value expected: got {text} but expected one of yes/no, true/false, t/f, y/n, 1/0 (case insensitive)."
    )


def _choice_type(choices: tuple):
    """Maps each choice's text to the choice itself (HfArgumentParser's rule; ours are all strings)."""
    by_text = {str(choice): choice for choice in choices}
    return lambda text: by_text.get(text, text)


# 128 + SIGINT: what a shell reports for a program stopped with Ctrl-C.
INTERRUPTED = 130


def quiet_on_ctrl_c(main: Callable[..., int]) -> Callable[..., int]:
    """A tool's ``main`` that ends on Ctrl-C with one line and exit code 130, not a traceback.

    By then the interrupted work's ``finally`` blocks have run: staging folders and half-written files are gone.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return INTERRUPTED

    return wrapper


def report(err: BaseException) -> int:
    print(error_line(describe(err)), file=sys.stderr)
    return 2


def print_path(path: str) -> None:
    """Prints a path a tool wrote, as its bytes when the terminal's encoding cannot say them (a name that is
    not valid UTF-8): a script reading the line gets the name that exists."""
    try:
        print(path)
    except UnicodeEncodeError:  # raised before anything is written
        sys.stdout.flush()
        sys.stdout.buffer.write(os.fsencode(path) + b"\n")
        sys.stdout.buffer.flush()


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
