"""The converter's --text_encoder: a folder that is not a complete, finite CLIP text model, or no folder at
all, is refused with one `error:` line saying what it is, exit code 2, and nothing written or lost.
"""

import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_refused, tree


pytestmark = pytest.mark.usefixtures("one_thread")


def _bert_folder(folder: Path, text_encoder_folder: Path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64)
    ).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(text_encoder_folder / name, folder / name)


def _truncated_weights(folder: Path, text_encoder_folder: Path):
    shutil.copytree(text_encoder_folder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])


def _one_weight_missing(folder: Path, text_encoder_folder: Path):
    from safetensors.torch import load_file, save_file

    shutil.copytree(text_encoder_folder, folder)
    weights = load_file(folder / "model.safetensors")
    del weights[sorted(weights)[0]]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def _nan_weight(folder: Path, text_encoder_folder: Path):
    from safetensors.torch import load_file, save_file

    shutil.copytree(text_encoder_folder, folder)
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[-1]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def _wider_than_the_network(folder: Path, text_encoder_folder: Path):
    from pipeline_mnist_ddim.conversion.text_encoders import build_text_encoder

    text_encoder, tokenizer = build_text_encoder(hidden_size=64, num_layers=1)  # the network expects 32
    text_encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


TEXT_ENCODER_CASES = {
    "a BERT model": (_bert_folder, ["'bert' model, not a CLIP text model"]),
    "truncated weights": (_truncated_weights, ["could not load the text encoder in"]),
    "a missing weight": (_one_weight_missing, ["not hold a complete CLIP text model", "missing"]),
    "a NaN weight": (_nan_weight, ["NaN or infinite"]),
    "a CLIP text model of the wrong width": (_wider_than_the_network, ["64", "32"]),
}


@pytest.mark.parametrize("case", TEXT_ENCODER_CASES)
def test_text_encoder_that_is_not_a_complete_clip_text_model_is_refused(case, workdir, converter, text_encoder_folder):
    make, expected = TEXT_ENCODER_CASES[case]
    encoder = workdir / "inputs" / "encoder"
    make(encoder, text_encoder_folder)
    before = tree(workdir)
    args = ["--checkpoint", workdir / "inputs" / "ckpt.pt", "--output_dir", workdir / "outputs" / "out"]
    assert_refused(*converter(*args, "--text_encoder", encoder), *expected)
    assert tree(workdir) == before


@pytest.mark.parametrize("source", ["./no-such-encoder", "/no/such/encoder", "no/such/encoder"])
def test_missing_text_encoder_folder_is_named_as_a_folder(source, workdir, converter):
    before = tree(workdir)
    args = ["--checkpoint", workdir / "inputs" / "ckpt.pt", "--output_dir", workdir / "outputs" / "out"]
    message = assert_refused(*converter(*args, "--text_encoder", source), f"no text encoder folder at {source}")
    assert "repo id" not in message.lower()
    assert tree(workdir) == before
