"""The training script writes lesson-format checkpoints that resume and convert."""

import os

import numpy as np
import pytest
import torch

from pipeline_mnist_ddim.conversion.checkpoint import CheckpointError, read_checkpoint, unet_from_lesson_state_dict
from pipeline_mnist_ddim.tools.training import TrainSettings, make_ema, train


def write_tiny_dataset(folder) -> str:
    """Forty random 28x28 digits labelled 0-9 in turn, as an .npz."""
    rng = np.random.default_rng(0)
    path = folder / "digits.npz"
    np.savez(path, images=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), labels=np.arange(40) % 10)
    return str(path)


@pytest.fixture
def tiny_dataset(tmp_path):
    return write_tiny_dataset(tmp_path)


def tiny_config(tmp_path, dataset, **overrides):
    config = dict(
        output_dir=str(tmp_path / "run"),
        dataset=dataset,
        base_channels=32,
        num_training_steps=2,
        batch_size=4,
        save_every=1,
        sample_every=0,
        ema_decay=0.99,
        keep_last=2,
    )
    return TrainSettings(**{**config, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder's parent, last checkpoint) of one two-step run, shared by the checkpoint tests."""
    folder = tmp_path_factory.mktemp("training")
    return folder, train(tiny_config(folder, write_tiny_dataset(folder)))


def test_checkpoint_has_the_lessons_name_and_keys(trained):
    _, path = trained
    assert os.path.basename(path) == "gaussian_diffusion_ddpm-2.pt"
    checkpoint = torch.load(path, weights_only=True)
    assert {"step", "model_state_dict", "optimizer_state_dict", "loss"} <= set(checkpoint)
    assert checkpoint["step"] == 2
    assert all(key.startswith("_unet.") for key in checkpoint["model_state_dict"])


def test_text_encoder_folder_is_written_beside_the_checkpoints(trained):
    folder, _ = trained
    assert os.path.isdir(folder / "run" / "text_encoder")


@pytest.mark.parametrize("use_ema", [False, True])
def test_checkpoint_converts_from_its_weights_or_their_ema(trained, use_ema):
    state_dict, meta = read_checkpoint(trained[1], use_ema=use_ema)
    assert unet_from_lesson_state_dict(state_dict).config.base_channels == 32
    assert meta["step"] == 2


def test_ema_first_copies_the_weights_then_warms_up_to_its_decay(trained):
    """EMA update n (0-based) keeps d_n = min(decay, (1 + n) / (10 + n)) of the average, d_0 = 0."""
    folder, _ = trained
    first, second = (
        torch.load(folder / "run" / f"gaussian_diffusion_ddpm-{step}.pt", weights_only=True) for step in (1, 2)
    )
    decay = min(0.99, (1 + 1) / (10 + 1))  # tiny_config's ema_decay, still warming up at update 1
    for key, weights in second["model_state_dict"].items():
        assert torch.equal(first["ema_state_dict"][key], first["model_state_dict"][key])
        expected = decay * first["ema_state_dict"][key] + (1 - decay) * weights
        assert (second["ema_state_dict"][key] - expected).abs().max() <= 1e-6, key


@pytest.mark.parametrize("start", [0, 40])
def test_ema_follows_its_written_out_warm_up_and_resumes_mid_way(start):
    """Update n (0-based) keeps d_n = min(decay, (1 + n) / (10 + n)) of the average, d_0 = 0 (a copy)."""
    weight = torch.nn.Parameter(torch.tensor([0.0]))
    ema = make_ema([weight], decay=0.95, step=start)
    expected = 0.0  # the average starts as the weights it was made from
    for n in range(start, start + 60):
        weight.data.fill_(float(n % 7))  # weights that keep moving
        ema.step([weight])
        decay = 0.0 if n == 0 else min(0.95, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * weight.item()
        assert abs(ema.shadow_params[0].item() - expected) <= 1e-5, n


@pytest.mark.slow  # torch.compile
def test_compiled_network_saves_its_ema_under_the_lessons_keys(tmp_path, tiny_dataset):
    path = train(tiny_config(tmp_path, tiny_dataset, num_training_steps=1, compile=True, compile_backend="aot_eager"))
    checkpoint = torch.load(path, weights_only=True)
    assert list(checkpoint["ema_state_dict"]) == list(checkpoint["model_state_dict"])  # no "_orig_mod."
    for key, weights in checkpoint["model_state_dict"].items():
        assert torch.equal(checkpoint["ema_state_dict"][key], weights)  # the first EMA update copies


def test_resume_continues_from_the_latest_step(tmp_path, tiny_dataset):
    train(tiny_config(tmp_path, tiny_dataset))
    path = train(tiny_config(tmp_path, tiny_dataset, num_training_steps=3, resume="latest"))
    assert torch.load(path, weights_only=True)["step"] == 3
    kept = sorted(p for p in os.listdir(tmp_path / "run") if p.endswith(".pt"))
    assert kept == ["gaussian_diffusion_ddpm-2.pt", "gaussian_diffusion_ddpm-3.pt"]  # keep_last=2


def test_resume_refuses_a_checkpoint_with_non_finite_weights(tmp_path, tiny_dataset):
    path = train(tiny_config(tmp_path, tiny_dataset, num_training_steps=1))
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model_state_dict"]["_unet.initial_convolution.weight"][0] = float("nan")
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in \[_unet.initial_convolution.weight\]"):
        train(tiny_config(tmp_path, tiny_dataset, num_training_steps=2, resume=path))


def test_resume_refuses_weights_without_an_optimizer_state(tmp_path, tiny_dataset, trained):
    bare = tmp_path / "weights.pt"
    torch.save(torch.load(trained[1], weights_only=True)["model_state_dict"], bare)
    with pytest.raises(CheckpointError, match="cannot be resumed; start from its weights with --init_weights"):
        train(tiny_config(tmp_path, tiny_dataset, resume=str(bare)))


def test_init_weights_are_checked_as_the_converter_checks_them(tmp_path, tiny_dataset, trained):
    weights = torch.load(trained[1], weights_only=True)["model_state_dict"]
    weights["_unet.initial_convolution.weight"] = weights["_unet.initial_convolution.weight"].long()
    torch.save(weights, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="non-floating-point weights"):
        train(tiny_config(tmp_path, tiny_dataset, init_weights=str(tmp_path / "weights.pt")))


def test_a_text_encoder_folder_is_checked_as_the_converter_checks_it(tmp_path, tiny_dataset):
    from pipeline_mnist_ddim.conversion.text_encoders import TextEncoderError, build_text_encoder

    text_encoder, tokenizer = build_text_encoder()
    list(text_encoder.parameters())[-1].data[0] = float("nan")  # the final layer norm's bias
    text_encoder.save_pretrained(tmp_path / "encoder")
    tokenizer.save_pretrained(tmp_path / "encoder")
    with pytest.raises(TextEncoderError, match="NaN or infinite weights"):
        train(tiny_config(tmp_path, tiny_dataset, text_encoder=str(tmp_path / "encoder")))


def test_three_channel_training(tmp_path, tiny_dataset):
    path = train(tiny_config(tmp_path, tiny_dataset, channels=3, num_training_steps=1))
    state_dict, _ = read_checkpoint(path)
    assert state_dict["initial_convolution.weight"].shape[1] == 3
