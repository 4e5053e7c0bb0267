"""Model cards: one license everywhere, and a usage snippet that runs from any directory."""

import configparser
import re

import pytest
from conftest import REPO_ROOT

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
