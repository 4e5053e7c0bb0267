"""A hand-edited pipeline folder is refused by every tool that loads one (sample, interpolate, the demo) with one
`error:` line and exit code 2: before diffusers builds anything where the folder's JSON or weight headers
already tell (bounded time and memory: the loader is replaced by a test failure), or right after loading
where only the built model tells (weights missing from the files). Every file under the test's folder, the
pipeline folder included, is unchanged, byte for byte, and no output folder is left. A missing local folder is
named as one, not mistaken for a Hub id; a Hub id still goes to the Hub.
"""

import json
import resource
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_refused, tree

from pipeline_mnist_ddim.tools.commands import interpolate as interpolate_command
from pipeline_mnist_ddim.tools.commands import sample as sample_command
from pipeline_mnist_ddim.tools.sample import OUTPUT_FILES


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL_RUN = ["--num_samples", "2", "--num_inference_steps", "2"]


@pytest.fixture(scope="module")
def saved_folder(tiny_unet, tiny_text_encoder, tmp_path_factory) -> Path:
    """The tiny conditional pipeline as the converter writes it (unet, scheduler, text encoder, tokenizer, code)."""
    from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline

    text_encoder, tokenizer = tiny_text_encoder
    folder = tmp_path_factory.mktemp("saved") / "pipe"
    MNISTDDIMPipeline(
        unet=tiny_unet, scheduler=lesson_ddim_scheduler(), text_encoder=text_encoder, tokenizer=tokenizer
    ).save_pretrained(folder)
    return folder


@pytest.fixture
def workdir(tmp_path, saved_folder, monkeypatch):
    """inputs/pipe (the folder to tamper with), outputs/keep.txt; the remote-code cache kept inside tmp_path."""
    (tmp_path / "inputs").mkdir()
    (tmp_path / "outputs").mkdir()
    shutil.copytree(saved_folder, tmp_path / "inputs" / "pipe")
    (tmp_path / "outputs" / "keep.txt").write_text("precious output")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path.parent / f"{tmp_path.name}-hf_modules"))
    monkeypatch.chdir(tmp_path / "inputs")
    return tmp_path


def _loading_forbidden(*args, **kwargs):
    pytest.fail("diffusers was asked to build the pipeline before the folder was refused")


@pytest.fixture
def no_loading(monkeypatch):
    monkeypatch.setattr("diffusers.DiffusionPipeline.from_pretrained", _loading_forbidden)


def test_forbidden_loading_stops_a_valid_folder(workdir, no_loading, capsys):
    """Guards the "before loading" rows: the untampered folder does reach diffusers' loader."""
    with pytest.raises(pytest.fail.Exception, match="asked to build the pipeline"):
        sample_command.main(["--pipeline", str(workdir / "inputs" / "pipe"), "--output_dir", "o", *SMALL_RUN])


def test_untampered_folder_samples(workdir, capsys):
    """Guards every row: the same folder, untouched, loads and samples with exit code 0."""
    output = workdir / "outputs" / "samples"
    code = sample_command.main(
        ["--pipeline", str(workdir / "inputs" / "pipe"), "--output_dir", str(output), *SMALL_RUN]
    )
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in output.iterdir()) == sorted(OUTPUT_FILES)


def _json_edit(relative, change):
    def edit(folder: Path):
        path = folder / relative
        config = json.loads(path.read_text())
        change(config)
        path.write_text(json.dumps(config))

    return edit


def _set(relative, key, value):
    return _json_edit(relative, lambda config: config.__setitem__(key, value))


def _write(relative, text):
    return lambda folder: (folder / relative).write_text(text)


def _append(relative, text):
    return lambda folder: (folder / relative).write_text((folder / relative).read_text() + text)


def _remove_weights(relative, keep):
    """Rewrites a safetensors file keeping only the tensors ``keep(names)`` returns."""

    def edit(folder: Path):
        from safetensors.torch import load_file, save_file

        weights = load_file(folder / relative)
        kept = keep(sorted(weights))
        save_file({name: weights[name] for name in kept}, folder / relative, metadata={"format": "pt"})

    return edit


def _truncate(relative, size):
    return lambda folder: (folder / relative).write_bytes((folder / relative).read_bytes()[:size])


def _float8_header(folder: Path):
    """One UNet tensor's dtype renamed to a float8 type in the safetensors header (same byte count)."""
    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = data[8 : 8 + length].decode()
    changed = header.replace('"F32"', '"F8_E4M3"', 1).encode()
    path.write_bytes(struct.pack("<Q", len(changed)) + changed + data[8 + length :])


def _extra_token(folder: Path):
    path = folder / "tokenizer" / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    tokenizer["model"]["vocab"]["eleven"] = 500
    path.write_text(json.dumps(tokenizer))


SCHEDULER = "scheduler/scheduler_config.json"


UNET = "unet/config.json"


TEXT_ENCODER = "text_encoder/config.json"


TOKENIZER = "tokenizer/tokenizer_config.json"


UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


TEXT_WEIGHTS = "text_encoder/model.safetensors"


# id: (edit of the folder, texts the message must hold, whether diffusers may build the pipeline first)
FOLDER_CASES = {
    # item 8: tracebacks, aborts and huge allocations
    "steps_offset 1e6": (_set(SCHEDULER, "steps_offset", 1_000_000), ["steps_offset is 1000000", "0 to 1"], False),
    "num_train_timesteps 1e9": (
        _set(SCHEDULER, "num_train_timesteps", 1_000_000_000),
        ["num_train_timesteps is 1000000000", "1 to 10000"],
        False,
    ),
    "num_train_timesteps as text": (
        _set(SCHEDULER, "num_train_timesteps", "many"),
        ["could not be loaded as a pipeline", "num_train_timesteps is 'many'"],
        False,
    ),
    "beta_schedule bogus": (_set(SCHEDULER, "beta_schedule", "bogus"), ["beta_schedule is 'bogus'"], False),
    "a scheduler declared as another class": (
        _set(SCHEDULER, "_class_name", "LMSDiscreteScheduler"),
        ["_class_name is 'LMSDiscreteScheduler'", "DDIMScheduler"],
        False,
    ),
    "sample_size 0": (_set(UNET, "sample_size", 0), ["unet/config.json", "sample_size is 0"], False),
    "sample_size -32": (_set(UNET, "sample_size", -32), ["sample_size is -32"], False),
    'sample_size "32"': (_set(UNET, "sample_size", "32"), ["sample_size is '32'"], False),
    "sample_size 4096": (_set(UNET, "sample_size", 4096), ["sample_size is 4096", "8 to 128"], False),
    "sample_size 1e6": (_set(UNET, "sample_size", 1_000_000), ["sample_size is 1000000"], False),
    "sample_size 36 (not a multiple of 8)": (_set(UNET, "sample_size", 36), ["not a multiple of 8"], False),
    "base_channels 4096": (_set(UNET, "base_channels", 4096), ["base_channels is 4096"], False),
    "one UNet weight removed": (
        _remove_weights(UNET_WEIGHTS, lambda names: names[1:]),
        ["unet: 1 of its", "not in its weights file", "empty or random"],
        True,
    ),
    "the UNet's weights file removed": (
        lambda folder: (folder / UNET_WEIGHTS).unlink(),
        ["no diffusion_pytorch_model.safetensors"],
        False,
    ),
    "the UNet's weights truncated": (_truncate(UNET_WEIGHTS, 100), ["truncated or corrupt header"], False),
    "a float8 UNet weight": (_float8_header, ["F8_E4M3", "F32, F16, BF16"], False),
    "text encoder hidden_size 64": (
        _set(TEXT_ENCODER, "hidden_size", 64),
        ["hidden_size 64 differs from the UNet's cross_attention_dim 32"],
        False,
    ),
    "text encoder max_position_embeddings 2": (
        _set(TEXT_ENCODER, "max_position_embeddings", 2),
        ["tokenizer_config.json", "model_max_length is 8", "1 to 2"],
        False,
    ),
    "a BERT config as the text encoder": (
        _set(TEXT_ENCODER, "model_type", "bert"),
        ["model_type is 'bert'", "clip_text_model"],
        False,
    ),
    "model_max_length 1e9": (_set(TOKENIZER, "model_max_length", 10**9), ["model_max_length is 1000000000"], False),
    "token ids beyond the encoder": (_extra_token, ["token id 500", "vocab_size 24"], False),
    "a 100k-deep model_index.json": (
        _write("model_index.json", '{"a": ' * 100_000 + "1" + "}" * 100_000),
        ["model_index.json", "bytes, over"],
        False,
    ),
    "a 5000-deep model_index.json": (
        _write("model_index.json", "[" * 5000 + "]" * 5000),
        ["model_index.json", "nested too deeply"],
        False,
    ),
    "the UNet declared as another class": (
        _set("model_index.json", "unet", ["diffusers", "UNet2DModel"]),
        ["unet is declared as ['diffusers', 'UNet2DModel']"],
        False,
    ),
    "the text encoder declared as another class": (
        _set("model_index.json", "text_encoder", ["transformers", "BertModel"]),
        ["text_encoder is declared as ['transformers', 'BertModel']"],
        False,
    ),
    "the pipeline module named by a path": (
        _set("model_index.json", "_class_name", ["../../elsewhere", "MNISTDDIMPipeline"]),
        ["not a Python name"],
        False,
    ),
    "a syntax error in the pipeline's code": (
        _append("pipeline_mnist_ddim.py", "\ndef broken(:\n"),
        ["pipeline_mnist_ddim.py", "does not compile"],
        False,
    ),
    "a syntax error in the UNet's code": (
        _append("unet/unet_mnist.py", "\nclass (\n"),
        ["unet/unet_mnist.py", "does not compile"],
        False,
    ),
    "invalid JSON in unet/config.json": (_write(UNET, "{not json"), ["unet/config.json", "not a valid JSON"], False),
    # item 9: silently wrong images before
    "19 of 20 text-encoder tensors removed": (
        _remove_weights(TEXT_WEIGHTS, lambda names: names[:1]),
        ["text_encoder: 19 of its 20 weights", "empty or random"],
        True,
    ),
    "steps_offset -500": (_set(SCHEDULER, "steps_offset", -500), ["steps_offset is -500"], False),
    "beta_end < beta_start": (
        _json_edit(SCHEDULER, lambda c: c.update(beta_start=0.02, beta_end=0.0001)),
        ["beta_start 0.02 and beta_end 0.0001", "beta_start <= beta_end"],
        False,
    ),
    "model_max_length 0": (_set(TOKENIZER, "model_max_length", 0), ["model_max_length is 0"], False),
}


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_hand_edited_folder_is_refused_in_one_line(case, workdir, capsys, monkeypatch):
    edit, expected, may_load = FOLDER_CASES[case]
    folder = workdir / "inputs" / "pipe"
    edit(folder)
    if not may_load:
        monkeypatch.setattr("diffusers.DiffusionPipeline.from_pretrained", _loading_forbidden)
    before = tree(workdir)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    code = sample_command.main(["--pipeline", str(folder), "--output_dir", str(workdir / "outputs" / "o"), *SMALL_RUN])
    seconds = time.perf_counter() - started
    assert_refused(code, capsys.readouterr().err, *expected)
    assert tree(workdir) == before
    if not may_load:  # the JSON and the headers alone: no allocation the folder asked for, no slow work
        assert seconds < 10, seconds
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024  # kB


@pytest.mark.parametrize("case", ["num_train_timesteps 1e9", "one UNet weight removed", "model_max_length 0"])
def test_hand_edited_folder_is_refused_by_interpolate_and_the_demo_too(case, workdir, capsys):
    """One check for every tool that loads a --pipeline folder (load_pipeline_folder)."""
    from pipeline_mnist_ddim.tools.commands import demo as demo_command

    edit, expected, _ = FOLDER_CASES[case]
    folder = workdir / "inputs" / "pipe"
    edit(folder)
    before = tree(workdir)
    output = workdir / "outputs" / "figures"
    code = interpolate_command.main(["--pipeline", str(folder), "--output_dir", str(output), "--sections", "latents"])
    assert_refused(code, capsys.readouterr().err, *expected)
    assert demo_command.main(["--pipeline", str(folder), "--device", "cpu"]) == 2
    assert_refused(2, capsys.readouterr().err, *expected)
    assert tree(workdir) == before


def test_the_embedded_default_passes_the_folder_checks():
    from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR
    from pipeline_mnist_ddim.conversion.folder_checks import check_pipeline_folder

    check_pipeline_folder(DEFAULT_PIPELINE_DIR)


@pytest.fixture(scope="module")
def compact_folder(lesson_checkpoint, text_encoder_folder, tmp_path_factory, convert_script) -> Path:
    folder = tmp_path_factory.mktemp("compact") / "pipe"
    argv = ["--checkpoint", lesson_checkpoint, "--text_encoder", text_encoder_folder, "--output_dir", folder]
    assert convert_script.main([str(a) for a in [*argv, "--compact_text_encoder"]]) == 0
    return folder


COMPACT_CASES = {
    "untouched": (None, []),
    "its table's width changed": (
        _set(TEXT_ENCODER, "hidden_size", 64),
        ["hidden_size 64 differs from the UNet's cross_attention_dim 32"],
    ),
    "its table removed": (
        _remove_weights("text_encoder/diffusion_pytorch_model.safetensors", lambda names: []),
        ["text_encoder", "holds no tensors"],
    ),
    "a syntax error in its code": (_append("text_encoder/compact_text_encoder.py", "\n)\n"), ["does not compile"]),
}


@pytest.mark.parametrize("case", COMPACT_CASES)
def test_compact_text_encoder_folder_is_checked_as_well(case, compact_folder, workdir, capsys):
    edit, expected = COMPACT_CASES[case]
    folder = workdir / "inputs" / "compact"
    shutil.copytree(compact_folder, folder)
    if edit is not None:
        edit(folder)
    before = tree(workdir)
    output = workdir / "outputs" / "o"
    code = sample_command.main(["--pipeline", str(folder), "--output_dir", str(output), "--prompts", "7", *SMALL_RUN])
    if edit is None:
        assert code == 0, capsys.readouterr().err
        return
    assert_refused(code, capsys.readouterr().err, *expected)
    assert tree(workdir) == before


# ---------------------------------------------------------------- a folder or a Hub id


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
