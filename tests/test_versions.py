"""Folders load the same on transformers 4.x and 5.x, in one dtype, with every text-encoder weight.

transformers 5 saves a `CLIPTextModel` without the ``text_model.`` key prefix and names the
tokenizer `TokenizersBackend`; transformers 4.x then fails, or loads the text encoder randomly
initialised with only a warning. The pipeline's writer saves forms both read. The real cross-
version load (the lowest declared diffusers + transformers, in a second environment) is
``scripts/check_lowest_versions.sh``, run by ``.ci/run``; these tests pin the format it relies on.
"""

import configparser
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, load_script, package_code_in_a_folder
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, CLIPTextModel

from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR
from pipeline_mnist_ddim.conversion.folders import save_pipeline_folder


pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["0", "seven", " Nine ", "eleven"]


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def encode(tokenizer, text_encoder):
    ids = tokenizer(
        PROMPTS, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return ids, text_encoder(ids).last_hidden_state


@pytest.fixture(scope="module")
def saved_folder(tiny_unet, tiny_text_encoder, tmp_path_factory):
    """A tiny pipeline written by the package's writer, with float16 weights."""
    from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline

    text_encoder, tokenizer = tiny_text_encoder
    # copies: `.to(float16)` below works in place, and the fixtures are shared by the whole session
    pipe = MNISTDDIMPipeline(copy.deepcopy(tiny_unet), lesson_ddim_scheduler(), copy.deepcopy(text_encoder), tokenizer)
    folder = tmp_path_factory.mktemp("versions") / "pipeline"
    return save_pipeline_folder(pipe.to(dtype=torch.float16), str(folder))


# ---------------------------------------------------------------- the saved format


def test_text_encoder_weights_carry_the_key_names_transformers_4_expects(saved_folder):
    keys = load_file(os.path.join(saved_folder, "text_encoder", "model.safetensors")).keys()
    assert keys and all(key.startswith("text_model.") for key in keys)


def test_tokenizer_is_recorded_by_a_class_both_transformers_versions_have(saved_folder):
    assert read_json(os.path.join(saved_folder, "model_index.json"))["tokenizer"] == [
        "transformers",
        "PreTrainedTokenizerFast",
    ]
    config = read_json(os.path.join(saved_folder, "tokenizer", "tokenizer_config.json"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert os.path.isfile(os.path.join(saved_folder, "tokenizer", "tokenizer.json"))


def test_save_pretrained_rewrites_model_index_once_with_tokenizer_and_custom_classes(
    tiny_pipeline, tmp_path, monkeypatch
):
    import pipeline_mnist_ddim.pipeline_folder as folder_module

    rewrites = []
    update_json = folder_module._update_json

    def recording_update_json(path, update):
        rewrites.append(os.path.relpath(path, tmp_path))
        update_json(path, update)

    monkeypatch.setattr(folder_module, "_update_json", recording_update_json)
    tiny_pipeline.save_pretrained(tmp_path)
    assert rewrites.count("model_index.json") == 1, rewrites
    index = read_json(tmp_path / "model_index.json")
    assert index["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]
    assert index["_class_name"] == ["pipeline_mnist_ddim", "MNISTDDIMPipeline"]
    assert index["unet"] == ["unet_mnist", "MNISTUNet2DConditionModel"]


def test_text_encoder_loads_every_weight_and_encodes_as_before(saved_folder, tiny_text_encoder):
    text_encoder, info = CLIPTextModel.from_pretrained(
        os.path.join(saved_folder, "text_encoder"), output_loading_info=True, dtype=torch.float16
    )
    assert not any(len(info[kind]) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(saved_folder, "tokenizer"))
    ids, hidden = encode(tokenizer, text_encoder.float())
    as_saved = copy.deepcopy(tiny_text_encoder[0]).half().float()  # the shared fixture stays float32
    expected_ids, expected = encode(tiny_text_encoder[1], as_saved)
    assert torch.equal(ids, expected_ids)
    assert (hidden - expected).abs().max().item() == 0.0  # the same float16 weights, computed in float32


def test_plain_load_of_a_float16_folder_gives_float32_throughout(saved_folder):
    pipe = DiffusionPipeline.from_pretrained(saved_folder, trust_remote_code=True)
    assert (pipe.unet.dtype, pipe.text_encoder.dtype) == (torch.float32, torch.float32)


def test_load_with_a_dtype_gives_that_dtype_throughout(saved_folder):
    pipe = DiffusionPipeline.from_pretrained(saved_folder, trust_remote_code=True, dtype=torch.float16)
    assert (pipe.unet.dtype, pipe.text_encoder.dtype) == (torch.float16, torch.float16)


def test_resaving_a_loaded_folder_keeps_the_portable_format(saved_folder, tmp_path):
    DiffusionPipeline.from_pretrained(saved_folder, trust_remote_code=True).save_pretrained(tmp_path)
    assert all(key.startswith("text_model.") for key in load_file(tmp_path / "text_encoder" / "model.safetensors"))
    assert read_json(tmp_path / "model_index.json")["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]
    assert read_json(tmp_path / "text_encoder" / "config.json")["dtype"] == "float32"


# ---------------------------------------------------------------- the embedded default


def test_embedded_default_loads_in_one_dtype_with_every_text_encoder_weight():
    """Holds once the default is written by this code (``scripts/build_default_pipeline.sh --refresh``)."""
    index = read_json(os.path.join(DEFAULT_PIPELINE_DIR, "model_index.json"))
    assert index["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]
    _, info = CLIPTextModel.from_pretrained(
        os.path.join(DEFAULT_PIPELINE_DIR, "text_encoder"), output_loading_info=True
    )
    assert not any(len(info[kind]) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert all(
        key.startswith("text_model.")
        for key in load_file(os.path.join(DEFAULT_PIPELINE_DIR, "text_encoder", "model.safetensors"))
    )
    pipe = DiffusionPipeline.from_pretrained(DEFAULT_PIPELINE_DIR, trust_remote_code=True)
    assert (pipe.unet.dtype, pipe.text_encoder.dtype) == (torch.float32, torch.float32)


def test_refresh_rewrites_the_default_with_byte_identical_unet_weights(tmp_path):
    refresh = load_script(REPO_ROOT / "scripts" / "refresh_default_pipeline.py")
    refreshed = refresh.refresh(DEFAULT_PIPELINE_DIR, str(tmp_path / "default"))
    unet_file = os.path.join("unet", "diffusion_pytorch_model.safetensors")
    assert sha256(os.path.join(refreshed, unet_file)) == sha256(os.path.join(DEFAULT_PIPELINE_DIR, unet_file))
    before = refresh.without_prefix(load_file(os.path.join(DEFAULT_PIPELINE_DIR, "text_encoder", "model.safetensors")))
    after = load_file(os.path.join(refreshed, "text_encoder", "model.safetensors"))
    assert all(key.startswith("text_model.") for key in after)
    after = refresh.without_prefix(after)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert read_json(os.path.join(refreshed, "model_index.json"))["tokenizer"] == [
        "transformers",
        "PreTrainedTokenizerFast",
    ]
    expected = package_code_in_a_folder()
    assert {path: Path(refreshed, path).read_bytes() for path in expected} == expected
    with open(os.path.join(refreshed, "README.md")) as f:
        card = f.read()
    with open(REPO_ROOT / "docs" / "default_model.md") as f:
        assert f.read().strip() in card
    assert "training step 5100, loss 0.0145" in card


def test_lowest_versions_check_installs_every_declared_minimum_but_torchs():
    check = load_script(REPO_ROOT / "tests" / "lowest_versions_check.py")
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    declared = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    expected = [line if line.startswith("torch") else line.replace(">=", "==") for line in declared]
    assert check.requirements() == expected
    assert "diffusers==0.36" in expected and "transformers==4.45" in expected  # as README's "Versions" says


# ---------------------------------------------------------------- optional dependencies

# Runs a script with scipy unimportable, as after a core install (`pip install -e .`).
WITHOUT_SCIPY = r"""
import runpy, sys

sys.modules["scipy"] = None  # `import scipy` raises ImportError; importlib.util.find_spec says it is absent
script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def run_without_scipy(script: str, *args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SCIPY, str(REPO_ROOT / "scripts" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("script", ["evaluate.py", "interpolate.py", "train_classifier.py"])
def test_script_help_works_without_the_eval_extra(script):
    result = run_without_scipy(script, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_evaluate_without_scipy_names_the_extra_in_one_error_line(tmp_path):
    result = run_without_scipy("evaluate.py", "--output_dir", str(tmp_path / "evaluation"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "[eval]" in result.stderr
    assert "Traceback" not in result.stderr


def test_converter_refuses_a_text_encoder_whose_weights_it_cannot_read(text_encoder_folder, tmp_path):
    """As transformers 4.x meets a folder saved by 5.x: every key unknown, all weights random."""
    from pipeline_mnist_ddim.conversion.text_encoders import TextEncoderError, load_text_encoder

    folder = tmp_path / "renamed"
    shutil.copytree(text_encoder_folder, folder)
    weights = load_file(folder / "model.safetensors")
    save_file({"other." + key: value for key, value in weights.items()}, folder / "model.safetensors")
    with pytest.raises(TextEncoderError, match="lacks .* of its weights"):
        load_text_encoder(str(folder))
