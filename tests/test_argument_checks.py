"""One set of argument checks (``tools/arguments.py``) for the command lines, the demo and the evaluation.

Each check refuses what is out of range, not finite, a bool or not a number, with a ValueError naming the
argument and what it accepts; the tools that take the same quantity refuse the same values the same way.
"""

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from pipeline_mnist_ddim.tools import arguments
from pipeline_mnist_ddim.tools.commands import evaluate as evaluate_command
from pipeline_mnist_ddim.tools.commands import sample as sample_command
from pipeline_mnist_ddim.tools.commands.evaluate import EvaluationSettings
from pipeline_mnist_ddim.tools.commands.interpolate import InterpolationSettings
from pipeline_mnist_ddim.tools.commands.sample import SampleSettings


NOT_NUMBERS = [None, "3", True, False, [1]]
NOT_FINITE = [math.nan, math.inf, -math.inf]

# check -> (its call with the argument's name, values it refuses, values it accepts with what it returns)
CHECKS = {
    "whole_number": (
        lambda value: arguments.whole_number(value, "--count", 1, 8),
        [0, 9, 2.5, -1, *NOT_NUMBERS, *NOT_FINITE],
        [(1, 1), (8, 8), (3.0, 3)],
    ),
    "at_least": (
        lambda value: arguments.at_least(value, "--count", 2),
        [1, 0, 2.5, *NOT_NUMBERS, *NOT_FINITE],
        [(2, 2), (10**9, 10**9), (4.0, 4)],
    ),
    "real_number": (
        lambda value: arguments.real_number(value, "--scale", 0, 1),
        [-0.01, 1.01, *NOT_NUMBERS, *NOT_FINITE],
        [(0, 0.0), (1, 1.0), (0.25, 0.25)],
    ),
    "check_seed": (
        lambda value: arguments.check_seed(value, "--seed"),
        [-(2**63) - 1, 2**64, 0.5, *NOT_NUMBERS, *NOT_FINITE],
        [(-(2**63), -(2**63)), (2**64 - 1, 2**64 - 1), (0, 0), (7.0, 7)],
    ),
    "check_steps": (
        lambda value: arguments.check_steps(value, "--steps"),
        [0, 1001, 2.5, *NOT_NUMBERS, *NOT_FINITE],
        [(1, 1), (1000, 1000), (50.0, 50)],
    ),
    "check_eta": (
        lambda value: arguments.check_eta(value, "--eta"),
        [-0.1, 1.01, *NOT_NUMBERS, *NOT_FINITE],
        [(0, 0.0), (1, 1.0), (0.5, 0.5)],
    ),
    "check_guidance_scale": (
        lambda value: arguments.check_guidance_scale(value, "--guidance_scale"),
        [-0.5, -1e-9, *NOT_NUMBERS, *NOT_FINITE],
        [(0, 0.0), (0.5, 0.5), (1, 1.0), (7.5, 7.5), (1e6, 1e6)],
    ),
}
NAMES = {"whole_number": "--count", "at_least": "--count", "real_number": "--scale", "check_seed": "--seed"}


@pytest.mark.parametrize(
    "check, value", [(name, value) for name, (_, refused, _) in CHECKS.items() for value in refused], ids=repr
)
def test_each_check_refuses_naming_the_argument_and_the_value(check, value):
    call = CHECKS[check][0]
    name = NAMES.get(check, "--" + check.removeprefix("check_"))
    with pytest.raises(ValueError) as err:
        call(value)
    message = str(err.value)
    assert message.startswith(f"{name} must be "), message
    assert message.endswith(f", not {value}"), message


@pytest.mark.parametrize(
    "check, value, expected",
    [(name, value, expected) for name, (_, _, accepted) in CHECKS.items() for value, expected in accepted],
    ids=repr,
)
def test_each_check_accepts_its_range_and_returns_the_value_normalised(check, value, expected):
    result = CHECKS[check][0](value)
    assert result == expected and type(result) is type(expected)


def test_the_seed_check_leaves_room_for_the_seeds_after_it():
    span = InterpolationSettings.LAST_SEED_OFFSET
    assert arguments.check_seed(2**64 - 1 - span, span=span) == 2**64 - 1 - span
    with pytest.raises(ValueError, match=f"--seed must be a whole number from -2\\*\\*63 to 2\\*\\*64 - 1 - {span}"):
        arguments.check_seed(2**64 - span, span=span)


# ---------------------------------------------------------------- one guidance bound in every tool


def sampler_guidance(scale):
    SampleSettings(guidance_scale=scale).validate()


def evaluation_guidance(scale):
    EvaluationSettings(guidance_scales=[1.0, scale]).validate()


@pytest.fixture
def demo_guidance(tiny_pipeline):
    from pipeline_mnist_ddim.tools.demo.limits import DemoLimits
    from pipeline_mnist_ddim.tools.demo.work import MNISTDemo

    demo = MNISTDemo(tiny_pipeline, limits=DemoLimits(max_images=8, max_image_steps=200, max_frames=6))
    return lambda scale: demo.sample_request("7 3", 1, 3, 0.0, scale, "", 42, "DDIM")


@pytest.mark.parametrize("scale", [-0.5, math.nan, math.inf], ids=repr)
def test_the_sampler_the_evaluation_and_the_demo_refuse_the_same_guidance_the_same_way(scale, demo_guidance):
    from pipeline_mnist_ddim.tools.demo.limits import DemoInputError

    messages = {}
    for tool, call in (("sampler", sampler_guidance), ("evaluation", evaluation_guidance), ("demo", demo_guidance)):
        with pytest.raises(ValueError) as err:
            call(scale)
        messages[tool] = str(err.value)
    assert isinstance(err.value, DemoInputError)  # the demo's own kind, shown in the page as is
    expected = f"must be a finite number >= 0 (<= 1: no guidance), not {scale}"
    assert messages == {
        "sampler": "--guidance_scale " + expected,
        "evaluation": "--guidance_scales " + expected,
        "demo": "guidance scale " + expected,
    }


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, 3.0], ids=repr)
def test_the_sampler_the_evaluation_and_the_demo_accept_the_same_guidance(scale, demo_guidance):
    sampler_guidance(scale)
    evaluation_guidance(scale)
    assert demo_guidance(scale).guidance_scale == scale


def test_the_evaluation_refuses_an_eta_the_sampler_refuses():
    with pytest.raises(ValueError, match=r"^--etas must be a number from 0 to 1 .*, not 1.5$"):
        EvaluationSettings(etas=[0.0, 1.5]).validate()
    with pytest.raises(ValueError, match=r"^--eta must be a number from 0 to 1 .*, not 1.5$"):
        SampleSettings(eta=1.5).validate()


@pytest.mark.parametrize(
    "main, argv, expected",
    [
        (sample_command.main, ["--guidance_scale", "-0.5"], "--guidance_scale must be a finite number >= 0"),
        (evaluate_command.main, ["--guidance_scales", "1", "-0.5"], "--guidance_scales must be a finite number >= 0"),
        (
            evaluate_command.main,
            ["--samples_per_cell", "1"],
            "--samples_per_cell must be a whole number of at least 2",
        ),
        (evaluate_command.main, ["--steps", "10", "1001"], "--steps must be a whole number from 1 to 1000"),
    ],
    ids=["sampler guidance", "evaluation guidance", "evaluation samples", "evaluation steps"],
)
def test_the_command_lines_print_the_checks_message_as_one_error_line(main, argv, expected, capsys, tmp_path):
    pytest.importorskip("scipy")  # the evaluation checks it is installed first
    assert main([*argv, "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + expected) and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- recorded results and the constants' home


@pytest.mark.parametrize("name", ["evaluation.json", "table_N200.json"])
def test_recorded_evaluation_results_read_back_with_the_current_settings(name):
    recorded = json.loads((REPO_ROOT / "docs" / "evaluation" / name).read_text())["settings"]
    settings = EvaluationSettings(**recorded)
    settings.validate()
    assert settings.samples_per_cell == recorded["samples_per_cell"] >= 2


@pytest.mark.parametrize("name", ["interpolation.json", "consistency_40.json"])
def test_recorded_interpolation_results_read_back_with_the_current_settings(name):
    InterpolationSettings(**json.loads((REPO_ROOT / "docs" / "evaluation" / name).read_text())["settings"]).validate()


def test_the_lessons_constants_and_the_checks_import_without_torch():
    code = (
        "import sys\n"
        "import pipeline_mnist_ddim.lesson.constants, pipeline_mnist_ddim.tools.arguments\n"
        "heavy = sorted({'torch', 'numpy', 'diffusers', 'transformers'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
