"""One command-line vocabulary: every tool parses its settings dataclasses the same way, answers --help at once
with its defaults, and keeps last release's spellings working with a deprecation warning; Ctrl-C ends a tool with one
line and exit code 130, and work that cannot succeed (a bogus device, an output folder through a file, arguments
out of range) is refused before it starts, before torch is even imported where the arguments alone tell."""

import configparser
import importlib
import json
import logging
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, assert_refused, command_module, tree

from pipeline_mnist_ddim.conversion.errors import describe, headline
from pipeline_mnist_ddim.tools.cli import parse_settings
from pipeline_mnist_ddim.tools.commands.sample import SampleSettings


# wrapper script (relative to the repository) -> command module in pipeline_mnist_ddim.tools.commands
WRAPPERS = {
    "scripts/sample_ddim.py": "sample",
    "convert_checkpoint.py": "convert",
    "scripts/train_lesson5e.py": "train",
    "scripts/evaluate.py": "evaluate",
    "scripts/interpolate.py": "interpolate",
    "scripts/demo.py": "demo",
    "scripts/benchmark.py": "benchmark",
    "scripts/train_classifier.py": "train_classifier",
}
# What --help must not load: the point of parsing before importing (transformers alone takes about a second).
HEAVY = {"torch", "diffusers", "transformers", "accelerate", "huggingface_hub", "numpy"}


def run_help(*command: str):
    """``python -X importtime COMMAND --help``: exit code, help text and the top-level packages it imported."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    imports = [line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    return done.returncode, done.stdout, {name.split(".")[0] for name in imports}


HELP_COMMANDS = [
    *sorted([*WRAPPERS, "scripts/refresh_default_pipeline.py"]),
    *(f"-m pipeline_mnist_ddim.tools.commands.{command}" for command in sorted(WRAPPERS.values())),  # the entry points
]


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help_shows_defaults_without_importing_torch_diffusers_or_transformers(command):
    code, help_text, imported = run_help(*command.split())
    assert code == 0
    assert re.search(r"\(default:\s", help_text) and "--help" in help_text
    assert "import time:" not in help_text and imported, "no -X importtime report: the check would be void"
    assert imported & HEAVY == set()


def test_help_keeps_the_usage_example_lines():
    _, help_text, _ = run_help("convert_checkpoint.py")
    assert "--output_dir mnist-ddim \\\n" in help_text  # a raw docstring: the continuation stays on its own line


@pytest.mark.parametrize("script, command", sorted(WRAPPERS.items()))
def test_script_wraps_its_command_module(script, command):
    source = (REPO_ROOT / script).read_text()
    assert f"from pipeline_mnist_ddim.tools.commands.{command} import main" in source
    assert callable(importlib.import_module(f"pipeline_mnist_ddim.tools.commands.{command}").main)


def test_every_command_is_a_console_entry_point():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    lines = [line.split("=") for line in config["options.entry_points"]["console_scripts"].strip().splitlines()]
    targets = {name.strip(): target.strip() for name, target in lines}
    assert set(targets.values()) == {
        f"pipeline_mnist_ddim.tools.commands.{command}:main" for command in WRAPPERS.values()
    }
    assert all(name.startswith("mnist-ddim-") for name in targets)


@pytest.mark.parametrize("command", ["sample", "convert", "evaluate", "interpolate", "demo", "benchmark"])
def test_commands_that_run_a_model_share_device_and_dtype_flags(command):
    parse_args = importlib.import_module(f"pipeline_mnist_ddim.tools.commands.{command}").parse_args
    flags = {"--device": "cpu", "--dtype": "bfloat16"}
    if command == "convert":  # writes weights in --dtype; runs nothing
        flags = {"--checkpoint": "c.pt", "--output_dir": "o", "--dtype": "bfloat16"}
    if command == "benchmark":  # times float32 and the device's reduced precision both
        flags = {"--device": "cpu"}
    parsed = parse_args([item for pair in flags.items() for item in pair])
    values = {
        name: getattr(p, name)
        for p in (parsed if isinstance(parsed, tuple) else (parsed,))
        for name in ("device", "dtype")
        if hasattr(p, name)
    }
    assert values == {flag[2:]: value for flag, value in flags.items() if flag in ("--device", "--dtype")}


def test_sampler_and_converter_name_the_checkpoint_alike():
    from pipeline_mnist_ddim.tools.commands import convert, sample

    assert sample.parse_args(["--checkpoint", "c.pt"]).checkpoint == "c.pt"
    assert convert.parse_args(["--checkpoint", "c.pt", "--output_dir", "o"]).checkpoint == "c.pt"


@pytest.mark.parametrize(
    "command, argv",
    [
        ("sample", ["--model_checkpoint", "c.pt"]),
        ("train", ["--no-sdpa"]),
        ("evaluate", ["--resume"]),
    ],
)
def test_spellings_never_released_are_refused(command, argv, capsys):
    parse_args = importlib.import_module(f"pipeline_mnist_ddim.tools.commands.{command}").parse_args
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_classifier_default_output_is_the_shipped_weights():
    from pipeline_mnist_ddim.tools.classifier import DEFAULT_WEIGHTS
    from pipeline_mnist_ddim.tools.commands import train_classifier

    assert train_classifier.parse_args([])[1] == DEFAULT_WEIGHTS


def test_training_accepts_only_the_mixed_precision_it_supports(capsys):
    from pipeline_mnist_ddim.tools.commands import train

    assert train.parse_args(["--mixed_precision", "bf16"]).mixed_precision == "bf16"
    with pytest.raises(SystemExit) as exit:
        train.parse_args(["--mixed_precision", "fp16"])
    assert exit.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_one_spelling_style_no_hyphenated_aliases_in_help(capsys):
    with pytest.raises(SystemExit):
        parse_settings([SampleSettings], ["--help"])
    help_text = capsys.readouterr().out
    assert "--num_samples" in help_text and "--num-samples" not in help_text


def test_unknown_flag_exits_with_code_2(capsys):
    with pytest.raises(SystemExit) as exit:
        parse_settings([SampleSettings], ["--num_grids", "3"])
    assert exit.value.code == 2 and "unrecognized arguments: --num_grids 3" in capsys.readouterr().err


LIBRARY_ERROR = OSError("Can't load tokenizer for 'x'.\n\n  Make sure that:\n  - 'x' is a correct model identifier\n")


def test_an_error_is_reported_on_one_line_with_all_its_text():
    assert (
        describe(LIBRARY_ERROR) == "Can't load tokenizer for 'x'. Make sure that: - 'x' is a correct model identifier"
    )
    assert describe(ValueError("")) == "ValueError"


def test_a_quoted_library_error_keeps_its_first_line_without_the_period():
    assert headline(LIBRARY_ERROR) == "Can't load tokenizer for 'x'"
    assert headline(KeyError()) == "KeyError"


def test_quick_evaluation_presets_are_overridden_by_given_flags():
    from pipeline_mnist_ddim.tools.commands import evaluate
    from pipeline_mnist_ddim.tools.commands.evaluate import EvaluationSettings

    settings, _ = evaluate.parse_args(["--quick", "--samples_per_cell", "5"])
    assert settings.samples_per_cell == 5 and settings.steps == EvaluationSettings.quick().steps


def test_ddpm_steps_default_is_the_lessons_training_steps():
    from pipeline_mnist_ddim.lesson import NUM_TRAIN_TIMESTEPS
    from pipeline_mnist_ddim.tools.commands.evaluate import DDPM_STEPS

    assert DDPM_STEPS == NUM_TRAIN_TIMESTEPS


# ---------------------------------------------------------------- the sampler, tried as a new user would


@pytest.fixture
def sample_with_tiny_pipeline(tiny_pipeline, monkeypatch, tmp_path):
    """Runs ``mnist-ddim-sample`` into tmp_path/out with the tiny pipeline; records each pipeline call's bar label."""
    from pipeline_mnist_ddim.tools.commands import sample

    labels = []
    pipeline_class = type(tiny_pipeline)

    class Recording(pipeline_class):
        def __call__(self, *args, **kwargs):
            labels.append(self._progress_bar_config.get("desc"))
            return super().__call__(*args, **kwargs)

    tiny_pipeline.__class__ = Recording  # this test's instance only
    monkeypatch.setattr(
        "pipeline_mnist_ddim.tools.sample.load_pipeline", lambda settings, dtype_name=None: tiny_pipeline
    )

    def run(*argv):
        return sample.main(
            ["--output_dir", str(tmp_path / "out"), "--num_samples", "2", "--num_inference_steps", "2", *argv]
        )

    return run, labels


def test_progress_bars_say_which_grid_they_sample(sample_with_tiny_pipeline):
    run, labels = sample_with_tiny_pipeline
    assert run() == 0
    assert labels == ["unconditional", "conditional"]


def test_redirected_run_records_its_real_folder_and_says_so_before_sampling(
    sample_with_tiny_pipeline, tmp_path, caplog
):
    run, _ = sample_with_tiny_pipeline
    assert run() == 0
    with caplog.at_level(logging.INFO):
        assert run() == 0
    second = tmp_path / "out" / "run-2"
    assert json.loads((second / "settings.json").read_text())["output_dir"] == str(second)
    messages = [record.getMessage() for record in caplog.records]
    announced = next(i for i, m in enumerate(messages) if "already holds a run" in m and str(second) in m)
    sampled = next(i for i, m in enumerate(messages) if m.startswith("sampled "))
    assert announced < sampled


@pytest.mark.slow  # a fresh process sampling the default
def test_ctrl_c_ends_a_tool_with_one_line_and_exit_code_130_leaving_no_half_written_files(tmp_path):
    output = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline_mnist_ddim.tools.commands.sample", "--output_dir", str(output)]
    command += ["--num_samples", "4", "--num_inference_steps", "1000"]  # long enough to be interrupted
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # A Ctrl-C the test runner itself ignores (pytest started with `&` in a script) would be inherited, and Python
    # keeps an inherited SIG_IGN: the tool gets Ctrl-C's default, as a terminal gives it.
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = ""
    while "unconditional:" not in seen:  # the first progress bar: sampling has started
        character = process.stderr.read(1)
        assert character, f"the tool ended before sampling: {seen}"
        seen += character
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
    assert "interrupted" in rest.splitlines()  # tqdm may redraw its bar after it, as it closes
    written = [path.name for path in output.rglob("*") if path.is_file()] if output.exists() else []
    assert written == []


# ---------------------------------------------------------------- impossible work refused before it starts


def test_benchmark_refuses_a_bogus_device(capsys):
    assert_refused(command_module("benchmark").main(["--device", "bogus"]), capsys.readouterr().err, "not a device")


@pytest.mark.parametrize(
    "script, argv",
    [
        ("evaluate", ["--quick"]),
        ("interpolate", []),
        ("train_lesson5e", ["--num_training_steps", "1"]),
    ],
)
def test_long_running_scripts_refuse_an_impossible_output_folder_before_working(script, argv, workdir, capsys):
    before = tree(workdir)
    code = command_module(script).main([*argv, "--output_dir", str(workdir / "inputs" / "notes.txt" / "out")])
    assert_refused(code, capsys.readouterr().err, "notes.txt", "is a file")
    assert tree(workdir) == before


@pytest.mark.parametrize(
    "command, argv",
    [
        ("sample", ["--num_samples", "100000000"]),
        ("sample", ["--seed", str(2**64)]),
        ("interpolate", ["--num_frames", "1000000000"]),
        ("interpolate", ["--sections", "prompts", "--prompt_pairs", "3"]),
    ],
)
def test_bad_arguments_are_refused_before_torch_is_even_imported(command, argv, tmp_path):
    """Bounded work: the refusal costs an interpreter start, not torch's import and a model's load."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    code = (
        f"import sys; from pipeline_mnist_ddim.tools.commands import {command}; "
        f"code = {command}.main({argv!r} + ['--output_dir', {str(tmp_path / 'out')!r}]); "
        "sys.exit(10 + code if 'torch' in sys.modules else code)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert_refused(result.returncode, result.stderr)  # 12 would mean: refused, but after importing torch
    assert not (tmp_path / "out").exists()
