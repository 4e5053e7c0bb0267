"""`--compact_text_encoder`: the text encoder's outputs for the lesson's 20 prompts, exact, small and strict.

Both folders (full encoder, compact encoder) are loaded in fresh processes in which this
package cannot be imported, as in test_round_trip.py: the compact components must carry
their own code.
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from compact_sampling import SIZE_LIMIT, folder_size, full_encoder_rounding, sample_in_fresh_process
from conftest import TINY_CONTEXT, perturbed_reference, run_converter, save_lesson_checkpoint

import pipeline_mnist_ddim.compact_text_encoder as compact_module
from pipeline_mnist_ddim.conversion.prompt_table import LESSON_PROMPTS, compact_text_encoder
from pipeline_mnist_ddim.conversion.text_encoders import build_text_encoder, encode_prompts
from pipeline_mnist_ddim.tools.commands import convert as convert_command


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(lesson_checkpoint, text_encoder_folder, tmp_path_factory):
    """The tiny checkpoint converted twice with the same text encoder: in full, and compact."""
    out = tmp_path_factory.mktemp("compact")
    script = convert_command
    full = run_converter(script, lesson_checkpoint, out / "full", "--text_encoder", str(text_encoder_folder))
    compact = run_converter(
        script,
        lesson_checkpoint,
        out / "compact",
        "--text_encoder",
        str(text_encoder_folder),
        "--compact_text_encoder",
    )
    return full, compact, out


@pytest.fixture(scope="module")
def sampled(folders):
    full, compact, work = folders
    return sample_in_fresh_process(full, work), sample_in_fresh_process(compact, work)


# ---------------------------------------------------------------- exactness


@pytest.mark.slow  # `sampled`: two fresh processes
def test_compact_folder_samples_the_20_prompts_as_the_full_encoder(folders, sampled):
    (full_images, _), (compact_images, _) = sampled
    assert full_images.shape == (20, 32, 32, 1)
    # Identical on the machines measured (0.0), but the table was computed in the converter's process from the
    # source encoder's file, the full folder's contexts in another process from its own copy: weights at other
    # memory offsets, which some CPUs' kernels sum in another order. So: within the call's own float32 rounding.
    assert np.abs(compact_images - full_images).max() <= 4 * full_encoder_rounding(folders[0])


def test_compact_table_holds_the_full_encoders_contexts_bit_for_bit(tiny_text_encoder):
    text_encoder, tokenizer = tiny_text_encoder
    compact, compact_tokenizer = compact_text_encoder(text_encoder, tokenizer)
    with torch.no_grad():
        # The table is the encoder's output for the 20 prompts as one batch: the same call here gives the same bits.
        table = encode_prompts(text_encoder, tokenizer, LESSON_PROMPTS)
        wide = encode_prompts(copy.deepcopy(text_encoder).double(), tokenizer, LESSON_PROMPTS)
    # One prompt at a time the encoder runs other matrix shapes, which may round differently on some CPUs
    # (identical here): within a few times the encoder's own float32 rounding.
    tolerance = 4 * (table.double() - wide).abs().max().item()
    for index, prompt in enumerate(LESSON_PROMPTS):
        pad = dict(padding="max_length", truncation=True, return_tensors="pt")
        with torch.no_grad():
            alone = text_encoder(tokenizer(prompt, max_length=tokenizer.model_max_length, **pad).input_ids)
            actual = compact(compact_tokenizer(prompt, max_length=compact_tokenizer.model_max_length, **pad).input_ids)
        assert torch.equal(actual.last_hidden_state, table[index : index + 1]), prompt
        assert torch.equal(actual[0], actual.last_hidden_state)
        assert (actual.last_hidden_state - alone.last_hidden_state).abs().max().item() <= tolerance, prompt


# ---------------------------------------------------------------- the folder


@pytest.mark.slow  # `sampled`: two fresh processes
def test_compact_folder_loads_without_the_package_and_carries_its_code(folders, sampled):
    _, compact, _ = folders
    _, (_, report) = sampled
    assert report["text_encoder"].startswith("diffusers_modules")
    index = json.loads((compact / "model_index.json").read_text())
    assert index["text_encoder"] == ["compact_text_encoder", "CompactTextEncoder"]
    code = compact / "text_encoder" / "compact_text_encoder.py"
    assert code.read_bytes() == Path(compact_module.__file__).read_bytes()


def test_compact_folder_model_card_says_which_prompts_it_accepts(folders):
    _, compact, _ = folders
    assert "--compact_text_encoder" in (compact / "README.md").read_text()


def test_compact_text_encoder_and_tokenizer_at_clip_width_take_under_5_mb(tmp_path):
    """20 prompts x 77 tokens x 768 in float32 is 4.73 MB; the full CLIP-L text model is ~490 MB."""
    reference = perturbed_reference(base_channels=32, context_dim=768, seed=6)
    checkpoint = save_lesson_checkpoint(reference, tmp_path / "gaussian_diffusion_ddpm-100.pt")
    text_encoder, tokenizer = build_text_encoder(hidden_size=768, num_layers=1, max_length=77)
    (tmp_path / "clip_width").mkdir()
    text_encoder.save_pretrained(tmp_path / "clip_width")
    tokenizer.save_pretrained(tmp_path / "clip_width")
    folder = run_converter(
        convert_command,
        checkpoint,
        tmp_path / "out",
        "--text_encoder",
        str(tmp_path / "clip_width"),
        "--compact_text_encoder",
    )
    size = folder_size(folder / "text_encoder") + folder_size(folder / "tokenizer")
    assert 20 * 77 * 768 * 4 < size <= SIZE_LIMIT, size


# ---------------------------------------------------------------- strictness


@pytest.mark.slow  # `sampled`: two fresh processes
def test_unknown_prompts_are_refused_with_the_20_accepted_prompts(sampled):
    _, (_, report) = sampled
    message = report["refusal"]
    assert "eleven" in message
    assert all(repr(prompt) in message for prompt in LESSON_PROMPTS), message


@pytest.mark.parametrize("prompt", ["SEVEN", "  Seven ", "\tseven\n", "7 "])
def test_case_and_surrounding_spaces_are_ignored_as_clip_ignores_them(tiny_text_encoder, prompt):
    compact, tokenizer = compact_text_encoder(*tiny_text_encoder)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert ids.tolist() == [[LESSON_PROMPTS.index(prompt.strip().lower())]]


@pytest.mark.parametrize("prompt", ["eleven", "seven seven", "7.", "", "zero one"])
def test_the_compact_encoder_itself_refuses_anything_but_the_20_prompts(tiny_text_encoder, prompt):
    compact, tokenizer = compact_text_encoder(*tiny_text_encoder)
    ids = tokenizer(
        [prompt], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with pytest.raises(ValueError, match="knows only the prompts"):
        compact(ids)


def test_compact_needs_a_text_encoder(lesson_checkpoint, tmp_path, capsys):
    argv = [
        "--checkpoint",
        str(lesson_checkpoint),
        "--output_dir",
        str(tmp_path / "out"),
        "--text_encoder",
        "none",
        "--compact_text_encoder",
    ]
    assert convert_command.main(argv) == 2
    assert "error: --compact_text_encoder needs a text encoder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sample_script_accepts_compact_text_encoder(lesson_checkpoint, text_encoder_folder):
    from pipeline_mnist_ddim.tools.commands import sample
    from pipeline_mnist_ddim.tools.sample import load_pipeline

    settings = sample.parse_args(
        ["--checkpoint", str(lesson_checkpoint), "--text_encoder", str(text_encoder_folder), "--compact_text_encoder"]
    )
    pipe = load_pipeline(settings)
    assert type(pipe.text_encoder).__name__ == "CompactTextEncoder"
    assert pipe.text_encoder.config.hidden_size == TINY_CONTEXT
