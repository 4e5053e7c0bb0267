"""Errors said to a person: one line, in words, safe to print on a terminal.

Used by the converter's own messages (quoting another library's error, a tensor's name from a file)
and by every command-line tool's ``error:`` line.
"""

import errno
import unicodedata


def describe(err: BaseException) -> str:
    """The error as one line; a full disk or a refused path said in words."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" while writing {err.filename}" if err.filename else ""
        return f"no space left on the device{where}: free some space or write elsewhere (nothing was replaced)"
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    return " ".join(_message_lines(err)) or type(err).__name__


def headline(err: BaseException) -> str:
    """The error's first line without its closing period, to quote another library's error inside a sentence of
    ours (its further lines are that library's advice, which our sentence replaces)."""
    lines = _message_lines(err)
    return lines[0].rstrip(".") if lines else type(err).__name__


def _message_lines(err: BaseException) -> list:
    # Lines end at "\n" only: a CR or form feed inside a quoted name stays in it, shown escaped by error_line.
    return [line.strip() for line in str(err).split("\n") if line.strip()]


# Longest ``error:`` line printed: a message quoting a hostile file's names must not flood the terminal.
MAX_ERROR_CHARS = 2000


def error_line(message: str) -> str:
    """``error: message`` safe to print: one line, control characters shown as escapes, bounded length.

    Messages quote names from files and the command line; a raw ESC, CR or bidi override in them would
    let a file redraw or recolour the terminal, or make the line read as something else.
    """
    text = terminal_safe(message[:MAX_ERROR_CHARS])  # cut first: escaping a huge message would take long
    if len(message) > MAX_ERROR_CHARS or len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 40] + f"... ({len(message)} characters in all)"
    return f"error: {text}"


def terminal_safe(text: str) -> str:
    """``text`` with every character a terminal could act on written as an escape (``\\x1b``, ``\\u202e``).

    C0/C1 controls and DEL (category Cc), format characters such as bidi overrides and zero-width
    joiners (Cf), line and paragraph separators (Zl, Zp), and undecodable bytes of a file name (Cs: the
    surrogates Python keeps them as).
    """
    return "".join(_escape(char) if unicodedata.category(char) in _UNSAFE else char for char in text)


_UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"}


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
