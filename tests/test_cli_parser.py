"""Our command-line parser speaks transformers' ``HfArgumentParser`` language exactly.

Why a parser of our own: ``cli.parse_settings`` answers ``--help`` in 0.09 s, while importing ``HfArgumentParser``
costs 1 to 4 s. Why the library stays in the tests, as the oracle: the tools' command-line language (boolean forms,
``--no_`` flags, lists, choices, deprecated hyphenated spellings, abbreviations, its errors) is HfArgumentParser's,
and a contract test is the cheapest way to keep ours from drifting from it; a hand-written expected output for each
case would be hundreds of literals that can only restate our own behaviour.

One table, each case once: every tool's defaults and ``--help`` (so each field's flag, default, choices and help
text), the generic cases (unknown, abbreviated and positional arguments, spellings never released) on one tool, and
each value form of each kind of field (int, float, str, each Literal, lists with and without choices, booleans
defaulting to False and to True, optional or not) on the first field of that kind. For each case both parsers give
equal dataclasses, or the same exit code and the same output.
"""

import contextlib
import dataclasses
import io
import typing
from typing import List, Literal, Optional

import pytest
from transformers import HfArgumentParser

from pipeline_mnist_ddim.tools import cli
from pipeline_mnist_ddim.tools.commands import (
    benchmark,
    convert,
    demo,
    evaluate,
    interpolate,
    sample,
    train,
    train_classifier,
)
from pipeline_mnist_ddim.tools.commands.benchmark import BenchmarkSettings
from pipeline_mnist_ddim.tools.commands.convert import ConvertSettings
from pipeline_mnist_ddim.tools.commands.demo import DemoSettings
from pipeline_mnist_ddim.tools.commands.evaluate import EvaluateCommandSettings, EvaluationSettings
from pipeline_mnist_ddim.tools.commands.interpolate import InterpolateCommandSettings, InterpolationSettings
from pipeline_mnist_ddim.tools.commands.sample import SampleSettings
from pipeline_mnist_ddim.tools.commands.train import TrainSettings
from pipeline_mnist_ddim.tools.commands.train_classifier import ClassifierTrainingSettings


# tool -> (its module, the dataclasses and preset defaults its parse_args hands to parse_settings)
TOOLS = {
    "sample": (sample, [SampleSettings], None),
    "convert": (convert, [ConvertSettings], None),
    "train": (train, [TrainSettings], None),
    "evaluate": (evaluate, [EvaluationSettings, EvaluateCommandSettings], None),
    "evaluate --quick": (
        evaluate,
        [EvaluationSettings, EvaluateCommandSettings],
        dataclasses.asdict(EvaluationSettings.quick()),
    ),
    "interpolate": (interpolate, [InterpolationSettings, InterpolateCommandSettings], None),
    "demo": (demo, [DemoSettings], None),
    "benchmark": (benchmark, [BenchmarkSettings], None),
    "train_classifier": (train_classifier, [ClassifierTrainingSettings], None),
}
REQUIRED = {"convert": ["--checkpoint", "c.pt", "--output_dir", "out"]}  # the tools' required flags, given
SAMPLE_VALUES = {int: ["3", "-2"], float: ["0.25", "1e-3"], str: ["a b", "7"]}
BAD_VALUES = {int: ["x", "1.5"], float: ["x"], str: []}


def parse_with_transformers(dataclass_types, argv, description=None, defaults=None):
    """What ``parse_settings`` did with ``HfArgumentParser``, its ``--field-name`` aliases dropped."""
    parser = HfArgumentParser(list(dataclass_types), description=description, formatter_class=cli.HelpFormatter)
    for action in parser._actions:
        for option_string in [o for o in action.option_strings if o.startswith("--") and "-" in o[2:]]:
            action.option_strings.remove(option_string)
            del parser._option_string_actions[option_string]
    if defaults:
        parser.set_defaults(**defaults)
    *parsed, remaining = parser.parse_args_into_dataclasses(
        args=list(argv), return_remaining_strings=True, look_for_args_file=False
    )
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    return tuple(parsed)


def outcome(parse, *args, **kwargs):
    """The parsed dataclasses, or the exit code; with what was printed."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            result = parse(*args, **kwargs)
        except SystemExit as exit:
            result = f"exit {exit.code}"
    return result, stdout.getvalue(), stderr.getvalue()


def field_command_lines(dataclass_types, name):
    """For the field ``name``: each value form it accepts and some it refuses."""
    for dataclass_type in dataclass_types:
        for field in [field for field in dataclasses.fields(dataclass_type) if field.name == name]:
            flag, kind = f"--{field.name}", typing.get_type_hints(dataclass_type)[field.name]
            if typing.get_origin(kind) is typing.Union:  # Optional[X]
                kind = typing.get_args(kind)[0]
            origin, args = typing.get_origin(kind), typing.get_args(kind)
            if kind is bool:
                yield [flag]
                for value in ("yes", "True", "T", "y", "1", "NO", "false", "f", "n", "0", "maybe"):
                    yield [flag, value]
                yield [flag + "=false"]
                yield [flag, "--help"]  # the optional value is not taken from the next flag
                if field.default is True:
                    yield ["--no_" + field.name]
                    yield ["--no-" + field.name.replace("_", "-")]
                    yield ["--no_" + field.name, "false"]  # store_false takes no value
            elif origin is Literal:
                yield from ([flag, choice] for choice in args)
                yield [flag, "bogus"]
            elif origin is list:
                values = list(field.metadata.get("choices", SAMPLE_VALUES[args[0]]))
                yield [flag, *values[:2]]
                yield [flag, values[-1]]
                yield [flag, values[0], flag, values[-1]]  # the last one wins
                yield [flag]  # needs at least one value
                yield from ([flag, "1", bad] for bad in BAD_VALUES[args[0]])
                if "choices" in field.metadata:
                    yield [flag, values[0], "bogus"]
            else:
                yield from ([flag, value] for value in SAMPLE_VALUES[kind])
                yield from ([flag, bad] for bad in BAD_VALUES[kind])
                yield [flag + "=" + SAMPLE_VALUES[kind][0]]
                yield [flag]  # a missing value
            if "_" in field.name:  # the hyphenated spelling, accepted with a deprecation warning
                yield [f"--{field.name.replace('_', '-')}", *([] if kind is bool else ["1"])]


def field_kind(dataclass_type, field) -> tuple:
    """What decides how a field parses: its type (Optional or not), its choices, a boolean's default."""
    kind = typing.get_type_hints(dataclass_type)[field.name]
    return (repr(kind), tuple(field.metadata.get("choices", ())), kind is bool and field.default is True)


def command_line_table():
    """{tool: its command lines}: each case once across the table (see the module docstring)."""
    table, seen_kinds = {}, set()
    for number, tool in enumerate(sorted(TOOLS)):
        _, dataclass_types, _ = TOOLS[tool]
        required = REQUIRED.get(tool, [])
        lines = [[], ["--help"]]
        if required:
            lines.append(required[:2])  # one required flag missing
        if number == 0:
            lines += [["--not_a_flag", "1"], ["positional"], ["--dev", "cpu"], ["--output", "o"]]
            lines += [["--model_checkpoint", "c.pt"], ["--resume"], ["--no-sdpa"]]  # never released
        for dataclass_type in dataclass_types:
            for field in dataclasses.fields(dataclass_type):
                kind = field_kind(dataclass_type, field)
                if kind not in seen_kinds:
                    seen_kinds.add(kind)
                    lines += [required + argv for argv in field_command_lines([dataclass_type], field.name)]
        table[tool] = lines
    return table


COMMAND_LINES = command_line_table()


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_command_line_parses_as_hf_argument_parser_parses_it(tool):
    module, dataclass_types, defaults = TOOLS[tool]
    for argv in COMMAND_LINES[tool]:
        ours = outcome(cli.parse_settings, dataclass_types, argv, module.__doc__, defaults)
        theirs = outcome(parse_with_transformers, dataclass_types, argv, module.__doc__, defaults)
        assert ours == theirs, f"{tool} {argv}"


def test_help_lists_every_flag_with_its_default():
    help_text = cli.build_parser([TrainSettings]).format_help()
    assert "--sdpa [SDPA]" in help_text and "--no_sdpa" in help_text and "(default: True)" in help_text
    assert "--mixed_precision {no,bf16}" in help_text and "(default: no)" in help_text


@pytest.mark.parametrize("kind", [dict, Optional[bool], typing.Union[int, str], List[List[int]]])
def test_a_field_type_without_a_command_line_form_is_refused_by_name(kind):
    unsupported = dataclasses.make_dataclass("Unsupported", [("odd_field", kind, dataclasses.field(default=None))])
    with pytest.raises(TypeError, match="Unsupported.odd_field"):
        cli.build_parser([unsupported])
