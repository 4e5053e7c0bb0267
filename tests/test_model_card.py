"""Model cards: one license everywhere, a usage snippet that runs from any directory, and what the converter puts
in a card: the checkpoint's step and loss only when they are a step and a loss, and paths and names quoted so that
none can break out of the snippet or its code spans."""

import configparser
import re
import shutil

import pytest
import torch
from conftest import REPO_ROOT, convert_args, lesson_state_dict

from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR
from pipeline_mnist_ddim.conversion.folders import model_card


pytestmark = pytest.mark.usefixtures("one_thread")


def card_for(pipe, repo):
    return str(model_card(pipe, "gaussian_diffusion_ddpm-100.pt", {"step": 100}, "none", repo=repo))


def loading_code(card: str) -> str:
    """The card's Python block up to the line that loads the pipeline."""
    code = re.search(r"```py\n(.*?)```", card, re.S).group(1)
    return code[: code.index("\n", code.index("pipe = "))]


def front_matter(text: str) -> dict:
    return dict(line.split(": ", 1) for line in text.split("---\n")[1].splitlines() if ": " in line)


def test_one_license_in_setup_cfg_and_every_card(unconditional_pipeline):
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    assert config["metadata"]["license"] == "MIT"
    assert front_matter(card_for(unconditional_pipeline, "user/mnist-ddim"))["license"] == "mit"
    with open(f"{DEFAULT_PIPELINE_DIR}/README.md") as f:
        assert front_matter(f.read())["license"] == "mit"
    assert front_matter((REPO_ROOT / "spaces" / "README.md").read_text())["license"] == "mit"  # the Space's card


def test_license_file_holds_the_mit_text_and_ships_with_the_package():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    assert config["metadata"]["license_files"].strip() == "LICENSE"
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the mnist-ddim-diffusers contributors\n")
    assert "Permission is hereby granted, free of charge" in text and 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_the_template_engine_of_the_card_is_a_declared_dependency(unconditional_pipeline):
    # huggingface_hub renders `ModelCard.from_template` with jinja2 but does not require it
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    declared = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    assert any(re.match(r"jinja2\s*>=", line, re.I) for line in declared), declared
    assert card_for(unconditional_pipeline, "user/mnist-ddim").startswith("---\n")


def test_card_of_the_default_folder_loads_it_from_any_directory(unconditional_pipeline, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO_ROOT)  # where scripts/build_default_pipeline.sh writes it, by a relative path
    code = loading_code(card_for(unconditional_pipeline, "pipeline_mnist_ddim/default_pipeline"))
    assert "DEFAULT_PIPELINE_DIR" in code and "pipeline_mnist_ddim/default_pipeline" not in code
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(code, namespace)
    assert type(namespace["pipe"]).__name__ == "MNISTDDIMPipeline"


def test_card_of_a_hub_repo_loads_it_by_its_id(unconditional_pipeline):
    code = loading_code(card_for(unconditional_pipeline, "user/mnist-ddim"))
    assert 'DiffusionPipeline.from_pretrained("user/mnist-ddim", trust_remote_code=True)' in code


def test_card_of_another_local_folder_names_it_by_absolute_path(unconditional_pipeline, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    code = loading_code(card_for(unconditional_pipeline, "out/mnist-ddim"))
    assert f'from_pretrained("{tmp_path}/out/mnist-ddim"' in code


# ---------------------------------------------------------------- what the converter puts in a card


def test_metadata_that_is_not_a_step_and_a_loss_stays_out_of_the_model_card(workdir, converter, tiny_reference):
    """A multi-element `loss` and a `step` holding text are left out (the card says "unknown"), not pasted raw."""
    torch.save(
        {
            "step": "<script>alert(1)</script>",
            "model_state_dict": lesson_state_dict(tiny_reference),
            "loss": torch.tensor([0.1, 0.2, 0.3]),
        },
        workdir / "inputs" / "odd-meta.pt",
    )
    output = workdir / "outputs" / "out"
    assert converter(*convert_args(workdir / "inputs" / "odd-meta.pt", output))[0] == 0
    card = (output / "README.md").read_text()
    assert "training step unknown)" in card and "<script>" not in card and "loss" not in card.split("Network")[0]


def test_model_card_keeps_an_integer_step_and_a_scalar_loss(workdir, converter):
    output = workdir / "outputs" / "out"
    assert converter(*convert_args(workdir / "inputs" / "ckpt.pt", output))[0] == 0
    assert "(training step 100, loss 0.0421)" in (output / "README.md").read_text()


INJECTED_OUTPUT = 'd/x", trust_remote_code=True); __import__("os").system("touch PWNED"); ("'


INJECTED_CHECKPOINT = "ck`\n<img src=x onerror=alert(1)>``.pt"


def _card_code(card: str) -> str:
    return card.split("```py\n", 1)[1].split("\n```", 1)[0]


def _code_spans_hold(line: str, text: str) -> bool:
    """Whether every occurrence of ``text`` in ``line`` lies inside a CommonMark code span (a run of N
    backticks up to the next run of exactly N)."""
    inside, position = [], 0
    while True:
        opening = re.compile(r"`+").search(line, position)
        if opening is None:
            break
        closing = re.compile(rf"(?<!`){opening[0]}(?!`)").search(line, opening.end())
        if closing is None:
            break
        inside.append((opening.end(), closing.start()))
        position = closing.end()
    found = [m.start() for m in re.finditer(re.escape(text), line)]
    return bool(found) and all(any(a <= i and i + len(text) <= b for a, b in inside) for i in found)


def test_paths_and_names_reach_the_model_card_quoted(workdir, converter):
    """An output folder and a checkpoint named to break out of the card's code (a runnable line) and code span
    (raw HTML) appear only as quoted text: the snippet is one call with one string, the HTML sits in a span."""
    import ast

    checkpoint = workdir / "inputs" / INJECTED_CHECKPOINT
    shutil.copy(workdir / "inputs" / "ckpt.pt", checkpoint)
    output = workdir / "outputs" / INJECTED_OUTPUT
    code, stderr = converter(*convert_args(checkpoint, output))
    assert code == 0, stderr
    card = (output / "README.md").read_text()
    calls = [node for node in ast.walk(ast.parse(_card_code(card))) if isinstance(node, ast.Call)]
    loads = [call for call in calls if getattr(call.func, "attr", None) == "from_pretrained"]
    assert len(loads) == 1 and ast.literal_eval(loads[0].args[0]) == str(output)
    assert not any(getattr(call.func, "attr", None) == "system" for call in calls)
    source_line = next(line for line in card.splitlines() if line.startswith("- Source checkpoint:"))
    assert source_line.endswith("(training step 100, loss 0.0421)")  # the newline did not end the line
    assert _code_spans_hold(source_line, "<img src=x onerror=alert(1)>")
    assert not (workdir / "inputs" / "PWNED").exists()
