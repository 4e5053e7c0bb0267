"""Folders load the same on transformers 4.x and 5.x, in one dtype, with every text-encoder weight.

transformers 5 saves a `CLIPTextModel` without the ``text_model.`` key prefix and names the
tokenizer `TokenizersBackend`; transformers 4.x then fails, or loads the text encoder randomly
initialised with only a warning. The pipeline's writer saves forms both read. The real cross-
version load (the lowest declared diffusers + transformers, in a second environment) is
``scripts/check_lowest_versions.sh``, run by ``.ci/run``; these tests pin the format it relies on.
"""

import copy
import hashlib
import importlib.util
import json
import os

import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPTextModel

from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR
from pipeline_mnist_ddim.pipeline_folder import save_pipeline_folder

from conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["0", "seven", " Nine ", "eleven"]


def load_script(name: str, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def encode(tokenizer, text_encoder):
    ids = tokenizer(PROMPTS, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        return ids, text_encoder(ids).last_hidden_state


@pytest.fixture(scope="module")
def saved_folder(tiny_unet, tiny_text_encoder, tmp_path_factory):
    """A tiny pipeline written by the package's writer, with float16 weights."""
    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNistDDIMPipeline
    from pipeline_mnist_ddim.schedulers import lesson_ddim_scheduler

    text_encoder, tokenizer = tiny_text_encoder
    pipe = MNistDDIMPipeline(tiny_unet, lesson_ddim_scheduler(), text_encoder, tokenizer)
    folder = tmp_path_factory.mktemp("versions") / "pipeline"
    return save_pipeline_folder(pipe.to(dtype=torch.float16), str(folder))


# ---------------------------------------------------------------- the saved format


def test_text_encoder_weights_carry_the_key_names_transformers_4_expects(saved_folder):
    keys = load_file(os.path.join(saved_folder, "text_encoder", "model.safetensors")).keys()
    assert keys and all(key.startswith("text_model.") for key in keys)


def test_tokenizer_is_recorded_by_a_class_both_transformers_versions_have(saved_folder):
    assert read_json(os.path.join(saved_folder, "model_index.json"))["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]
    config = read_json(os.path.join(saved_folder, "tokenizer", "tokenizer_config.json"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert os.path.isfile(os.path.join(saved_folder, "tokenizer", "tokenizer.json"))


def test_text_encoder_loads_every_weight_and_encodes_as_before(saved_folder, tiny_text_encoder):
    text_encoder, info = CLIPTextModel.from_pretrained(os.path.join(saved_folder, "text_encoder"),
                                                       output_loading_info=True, dtype=torch.float16)  # fmt: skip
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
    _, info = CLIPTextModel.from_pretrained(os.path.join(DEFAULT_PIPELINE_DIR, "text_encoder"), output_loading_info=True)
    assert not any(len(info[kind]) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert all(key.startswith("text_model.") for key in load_file(os.path.join(DEFAULT_PIPELINE_DIR, "text_encoder", "model.safetensors")))
    pipe = DiffusionPipeline.from_pretrained(DEFAULT_PIPELINE_DIR, trust_remote_code=True)
    assert (pipe.unet.dtype, pipe.text_encoder.dtype) == (torch.float32, torch.float32)


@pytest.mark.slow
def test_refresh_rewrites_the_default_with_byte_identical_unet_weights(tmp_path):
    refresh = load_script("refresh_default_pipeline", REPO_ROOT / "scripts" / "refresh_default_pipeline.py")
    refreshed = refresh.refresh(DEFAULT_PIPELINE_DIR, str(tmp_path / "default"))
    unet_file = os.path.join("unet", "diffusion_pytorch_model.safetensors")
    assert sha256(os.path.join(refreshed, unet_file)) == sha256(os.path.join(DEFAULT_PIPELINE_DIR, unet_file))
    before = refresh.without_prefix(load_file(os.path.join(DEFAULT_PIPELINE_DIR, "text_encoder", "model.safetensors")))
    after = load_file(os.path.join(refreshed, "text_encoder", "model.safetensors"))
    assert all(key.startswith("text_model.") for key in after)
    after = refresh.without_prefix(after)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert read_json(os.path.join(refreshed, "model_index.json"))["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]
    for name in ("pipeline_mnist_ddim.py", os.path.join("unet", "unet_mnist.py")):
        with open(os.path.join(refreshed, name)) as written, open(REPO_ROOT / "pipeline_mnist_ddim" / os.path.basename(name)) as source:
            assert written.read() == source.read()
    with open(os.path.join(refreshed, "README.md")) as f:
        card = f.read()
    with open(REPO_ROOT / "docs" / "default_model.md") as f:
        assert f.read().strip() in card
    assert "training step 5100, loss 0.0145" in card


def test_lowest_versions_check_installs_the_declared_minimums():
    check = load_script("lowest_versions_check", REPO_ROOT / "tests" / "lowest_versions_check.py")
    pinned = {line.split("==")[0]: line.split("==")[1] for line in check.requirements() if "==" in line}
    declared = {line.split(">=")[0].strip(): line.split(">=")[1].strip() for line in (REPO_ROOT / "setup.cfg").read_text().splitlines()
                if line.strip().startswith(("diffusers>=", "transformers>=")) for line in [line.strip()]}  # fmt: skip
    assert pinned == declared and set(pinned) == {"diffusers", "transformers"}
