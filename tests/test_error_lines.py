"""Error lines are safe to print on a terminal: one line, bounded in length, with control characters, bidi
overrides and undecodable bytes shown as visible escapes, wherever the text came from.
"""

import os

import pytest
from conftest import assert_refused, convert_args, tree


pytestmark = pytest.mark.usefixtures("one_thread")


# ESC (colours, screen clears), CR (overwrites the line), C1 CSI, DEL, a bidi override, a line separator,
# a zero-width joiner, and the undecodable byte 0xFF of a file name.
HOSTILE_TEXT = "\x1b[2J\x1b[31mRED\r\x9b1m\x7f\u202eevil\u2028\u200d" + os.fsdecode(b"\xff")


VISIBLE_ESCAPES = ["\\x1b[2J\\x1b[31mRED\\x0d\\x9b1m\\x7f\\u202eevil\\u2028\\u200d\\udcff"]


def _assert_terminal_safe(message: str) -> None:
    import unicodedata

    lines = message.split("\n")  # the line ends themselves are fine; nothing else of category C or Z[lp] is
    unsafe = [ch for line in lines for ch in line if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    assert not unsafe, f"raw control characters {unsafe!r} in {message!r}"


ESCAPE_CASES = {
    # id: (converter arguments given the working folder, texts the message must hold)
    "a missing checkpoint's name": (
        lambda w: convert_args(w / "inputs" / f"{HOSTILE_TEXT}.pt", w / "outputs" / "out"),
        ["no such checkpoint file", *VISIBLE_ESCAPES],
    ),
    "an output folder's name": (
        lambda w: convert_args(w / "inputs" / "ckpt.pt", w / "outputs" / "keep.txt" / HOSTILE_TEXT / "out"),
        ["is a file", *VISIBLE_ESCAPES],
    ),
    "a text encoder folder's name": (
        lambda w: [
            *convert_args(w / "inputs" / "ckpt.pt", w / "outputs" / "out")[:-2],
            "--text_encoder",
            f"./{HOSTILE_TEXT}",
        ],
        ["no text encoder folder", *VISIBLE_ESCAPES],
    ),
    "a usage error (argparse)": (
        lambda w: [*convert_args(w / "inputs" / "ckpt.pt", w / "outputs" / "out"), "--dtype", HOSTILE_TEXT],
        ["--dtype", "\\x1b[2J"],
    ),
}


@pytest.mark.parametrize("case", ESCAPE_CASES)
def test_error_lines_show_control_characters_as_escapes(case, workdir, convert_script, capsys):
    arguments, expected = ESCAPE_CASES[case]
    before = tree(workdir)
    try:
        code = convert_script.main([str(a) for a in arguments(workdir)])
    except SystemExit as exit:  # argparse's usage errors exit from the parser
        code = exit.code
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if "error: " in line]
    assert code == 2 and len(errors) == 1, stderr
    _assert_terminal_safe(stderr)
    for text in expected:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    assert tree(workdir) == before


def test_sampler_prompt_with_terminal_escapes_is_shown_escaped(sampler, workdir):
    code, stderr, _ = sampler("--prompts", "7 \x1b[2J\u202e")
    assert_refused(code, stderr, "never saw", "\\x1b[2j\\u202e")  # prompts are read lower-cased
    _assert_terminal_safe(stderr)


def test_every_error_line_is_one_bounded_line():
    from pipeline_mnist_ddim.conversion.errors import MAX_ERROR_CHARS, error_line

    message = HOSTILE_TEXT * 1000 + "x" * 10_000_000
    line = error_line(message)
    assert len(line) <= MAX_ERROR_CHARS + len("error: ") and f"({len(message)} characters in all)" in line
    assert line.startswith("error: " + VISIBLE_ESCAPES[0])
    _assert_terminal_safe(line)
    assert error_line("two\nlines") == "error: two\\x0alines"
