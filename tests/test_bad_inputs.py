"""Bad input to the converter: a clear error (exit code 2, `error: ...`) and nothing written or lost."""

import os
import random
from pathlib import Path

import pytest
import torch
from conftest import lesson_state_dict

from pipeline_mnist_ddim.conversion.checkpoint import CheckpointError, read_checkpoint


pytestmark = pytest.mark.usefixtures("one_thread")


class RunsCodeWhenUnpickled:
    """Pickles as a call to os.makedirs(marker): loading it unsafely would create the marker folder."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


@pytest.fixture
def workdir(tmp_path):
    """An empty folder holding only what a test puts there, so leftovers are easy to spot."""
    (tmp_path / "inputs").mkdir()
    (tmp_path / "outputs").mkdir()
    return tmp_path


def convert(convert_script, capsys, checkpoint, output_dir, *options):
    """(exit code, stderr) of the converter, without a text encoder (not under test here)."""
    code = convert_script.main(
        ["--checkpoint", str(checkpoint), "--output_dir", str(output_dir), "--text_encoder", "none", *options]
    )
    return code, capsys.readouterr().err


def assert_refused_leaving_nothing(code, stderr, outputs: Path, *expected_in_message):
    assert code == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]  # progress bars may precede it
    assert len(errors) == 1, stderr
    for text in expected_in_message:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    assert list(outputs.iterdir()) == []  # neither the output folder nor a .tmp-* staging sibling


def save_state_dict(state_dict, path):
    torch.save({"step": 1, "model_state_dict": state_dict, "optimizer_state_dict": {}, "loss": 0.1}, path)
    return path


# ---------------------------------------------------------------- unreadable files


def test_truncated_checkpoint_is_refused(convert_script, capsys, workdir, lesson_checkpoint):
    data = lesson_checkpoint.read_bytes()
    truncated = workdir / "inputs" / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    code, stderr = convert(convert_script, capsys, truncated, workdir / "outputs" / "out")
    assert_refused_leaving_nothing(code, stderr, workdir / "outputs", "truncated.pt", "truncated")


def test_random_bytes_are_refused(convert_script, capsys, workdir):
    noise = workdir / "inputs" / "noise.pt"
    noise.write_bytes(random.Random(0).randbytes(4096))
    code, stderr = convert(convert_script, capsys, noise, workdir / "outputs" / "out")
    assert_refused_leaving_nothing(code, stderr, workdir / "outputs", "noise.pt", "could not be read as a checkpoint")


def test_missing_checkpoint_file_is_refused(convert_script, capsys, workdir):
    code, stderr = convert(convert_script, capsys, workdir / "inputs" / "absent.pt", workdir / "outputs" / "out")
    assert_refused_leaving_nothing(code, stderr, workdir / "outputs", "absent.pt")


def test_pickle_that_would_run_code_is_refused_without_running_it(convert_script, capsys, workdir):
    marker = workdir / "inputs" / "code-ran"
    malicious = workdir / "inputs" / "malicious.pt"
    torch.save({"step": 1, "model_state_dict": RunsCodeWhenUnpickled(marker)}, malicious)
    code, stderr = convert(convert_script, capsys, malicious, workdir / "outputs" / "out")
    assert_refused_leaving_nothing(code, stderr, workdir / "outputs", "refusing")
    assert not marker.exists()


def test_malicious_pickle_really_runs_code_when_loaded_unsafely(workdir):
    """Guards the test above: its payload is live, so 'marker absent' means the converter refused it."""
    marker = workdir / "inputs" / "code-ran"
    malicious = workdir / "inputs" / "malicious.pt"
    torch.save({"model_state_dict": RunsCodeWhenUnpickled(marker)}, malicious)
    torch.load(malicious, weights_only=False)
    assert marker.is_dir()


def test_read_checkpoint_raises_checkpoint_error_on_unreadable_files(workdir):
    noise = workdir / "inputs" / "noise.pt"
    noise.write_bytes(random.Random(1).randbytes(512))
    with pytest.raises(CheckpointError):
        read_checkpoint(str(noise))


# ---------------------------------------------------------------- readable files with the wrong weights


def test_foreign_state_dict_is_refused(convert_script, capsys, workdir):
    foreign = workdir / "inputs" / "linear.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), foreign)
    code, stderr = convert(convert_script, capsys, foreign, workdir / "outputs" / "out")
    assert_refused_leaving_nothing(code, stderr, workdir / "outputs", "Lesson 5e")


def test_tensor_of_wrong_shape_is_refused_naming_its_key(convert_script, capsys, workdir, tiny_reference):
    state_dict = lesson_state_dict(tiny_reference)
    state_dict["_unet.downs.1.0.block1.proj.weight"] = torch.zeros(64, 32, 3, 1)
    path = save_state_dict(state_dict, workdir / "inputs" / "wrong-shape.pt")
    code, stderr = convert(convert_script, capsys, path, workdir / "outputs" / "out")
    assert_refused_leaving_nothing(code, stderr, workdir / "outputs", "downs.1.0.block1.proj.weight", "(64, 32, 3, 1)")


def test_unknown_extra_key_is_refused_naming_it(convert_script, capsys, workdir, tiny_reference):
    state_dict = lesson_state_dict(tiny_reference)
    state_dict["_unet.downs.0.9.weight"] = torch.zeros(3)
    path = save_state_dict(state_dict, workdir / "inputs" / "extra-key.pt")
    code, stderr = convert(convert_script, capsys, path, workdir / "outputs" / "out")
    assert_refused_leaving_nothing(code, stderr, workdir / "outputs", "downs.0.9.weight")


def test_missing_key_is_refused_naming_the_missing_weight(convert_script, capsys, workdir, tiny_reference):
    state_dict = lesson_state_dict(tiny_reference)
    del state_dict["_unet.ups.2.5.proj_out.bias"]
    path = save_state_dict(state_dict, workdir / "inputs" / "missing-key.pt")
    code, stderr = convert(convert_script, capsys, path, workdir / "outputs" / "out")
    missing = "up_blocks.2.attentions.2.proj_out.bias"  # reported under its diffusers name
    assert_refused_leaving_nothing(code, stderr, workdir / "outputs", "missing", missing)


def test_text_encoder_of_the_wrong_width_is_refused(convert_script, capsys, workdir, lesson_checkpoint):
    from pipeline_mnist_ddim.conversion.text_encoders import build_text_encoder

    text_encoder, tokenizer = build_text_encoder(hidden_size=64, num_layers=1)  # the network expects 32
    encoder_folder = workdir / "inputs" / "wide-encoder"
    text_encoder.save_pretrained(encoder_folder)
    tokenizer.save_pretrained(encoder_folder)
    code = convert_script.main(
        [
            "--checkpoint",
            str(lesson_checkpoint),
            "--output_dir",
            str(workdir / "outputs" / "out"),
            "--text_encoder",
            str(encoder_folder),
        ]
    )
    assert_refused_leaving_nothing(code, capsys.readouterr().err, workdir / "outputs", "64", "32")


# ---------------------------------------------------------------- the output folder


def test_non_empty_output_folder_is_left_untouched_without_overwrite(
    convert_script, capsys, workdir, lesson_checkpoint
):
    output = workdir / "outputs" / "out"
    output.mkdir()
    (output / "notes.txt").write_text("precious")
    code, stderr = convert(convert_script, capsys, lesson_checkpoint, output)
    assert code == 2 and "--overwrite" in stderr
    assert [p.name for p in output.iterdir()] == ["notes.txt"]
    assert (output / "notes.txt").read_text() == "precious"
    assert [p.name for p in (workdir / "outputs").iterdir()] == ["out"]


def test_overwrite_replaces_a_pipeline_folder_the_converter_wrote(convert_script, capsys, workdir, lesson_checkpoint):
    output = workdir / "outputs" / "out"
    assert convert(convert_script, capsys, lesson_checkpoint, output)[0] == 0
    (output / "notes.txt").write_text("stale")
    code, _ = convert(convert_script, capsys, lesson_checkpoint, output, "--overwrite")
    assert code == 0
    assert not (output / "notes.txt").exists()
    assert (output / "model_index.json").is_file() and (output / "unet" / "unet_mnist.py").is_file()
    assert [p.name for p in (workdir / "outputs").iterdir()] == ["out"]  # no staging or retired folder left


def test_bad_checkpoint_with_overwrite_keeps_the_existing_folder(convert_script, capsys, workdir, lesson_checkpoint):
    output = workdir / "outputs" / "out"
    assert convert(convert_script, capsys, lesson_checkpoint, output)[0] == 0
    (output / "notes.txt").write_text("precious")
    foreign = workdir / "inputs" / "linear.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), foreign)
    code, _ = convert(convert_script, capsys, foreign, output, "--overwrite")
    assert code == 2
    assert (output / "notes.txt").read_text() == "precious"
    assert [p.name for p in (workdir / "outputs").iterdir()] == ["out"]


@pytest.mark.parametrize("source", ["/no/such/folder", "./no-such-folder", "no/such/folder"])
def test_missing_pipeline_folder_is_named_not_mistaken_for_a_hub_id(source):
    from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder

    with pytest.raises(OSError, match="no pipeline folder at"):
        load_pipeline_folder(source)


def test_folder_without_model_index_is_refused(workdir):
    from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder

    with pytest.raises(OSError, match="no model_index.json"):
        load_pipeline_folder(str(workdir))


def test_hub_ids_still_go_to_the_hub(monkeypatch):
    """`user/repo` is handed to diffusers as it is, not taken for a missing local folder (no network here)."""
    from diffusers import DiffusionPipeline

    from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder

    asked = []
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", lambda source, **kwargs: asked.append((source, kwargs)))
    load_pipeline_folder("someone/mnist-ddim", torch.float32)
    assert asked == [("someone/mnist-ddim", {"trust_remote_code": True, "torch_dtype": torch.float32})]
