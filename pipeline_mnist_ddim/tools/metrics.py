"""Evaluation metrics for generated digits (pure functions; torch, numpy and, for the Frechet distance, scipy).

- [`conditional_accuracy`]: does the sample for label ``k`` classify as ``k``?
- [`predict_labels`] / [`classifier_features`]: the classifier's labels or penultimate features, batched.
- [`frechet_distance`] / [`classifier_frechet_distance`]: FID formula on a digit classifier's
  penultimate features (not Inception), so values are only comparable with the same classifier.
- [`label_histogram`] / [`label_entropy`]: class spread of (predicted) labels, for mode collapse.
- [`nearest_neighbour_distance`]: distance from each sample to its closest training image, for
  memorisation.

Images are (N, 1 or 3, 32, 32) tensors in [0, 1].
"""

import warnings
from typing import Callable, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn


ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[int]]
EVAL_EXTRA_HINT = 'pip install "mnist-ddim-diffusers[eval]"'


def require_scipy():
    """``scipy.linalg``, imported only where needed: the rest of this module (and the scripts'
    ``--help``) works after a core install."""
    try:
        import scipy.linalg
    except ImportError as err:
        raise ImportError(
            f"the Frechet distance needs scipy, which the core install lacks: {EVAL_EXTRA_HINT}"
        ) from err
    return scipy.linalg


@torch.no_grad()
def _run_batched(
    classifier: nn.Module, images: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int
) -> torch.Tensor:
    """Apply ``fn`` in eval mode on the classifier's device, restoring the caller's mode after."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    try:
        outputs = [fn(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    finally:
        classifier.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


def classifier_features(classifier: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The classifier's ``features(x)`` for each image, shape (N, F) float32 on the CPU."""
    return _run_batched(classifier, images, classifier.features, batch_size)


def predict_labels(classifier: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The classifier's predicted label for each image, shape (N,) int64."""
    return _run_batched(classifier, images, classifier, batch_size).argmax(dim=1)


def conditional_accuracy(
    classifier: nn.Module, images: torch.Tensor, labels: ArrayLike, batch_size: int = 256
) -> float:
    r"""Share of images whose predicted class equals the label they were generated (or drawn) for.

    Args:
        classifier (`nn.Module`): Maps (B, C, 32, 32) images in [0, 1] to (B, 10) logits.
        images (`torch.Tensor`): (N, 1 or 3, 32, 32) images in [0, 1].
        labels (`torch.Tensor` or array-like): (N,) intended labels.
        batch_size (`int`, defaults to 256): Images per forward pass.

    Returns:
        `float`: accuracy in [0, 1].
    """
    labels = torch.as_tensor(labels).long().flatten()
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("conditional_accuracy needs at least one image")
    return (predict_labels(classifier, images, batch_size) == labels).float().mean().item()


def _as_2d_float64(features: ArrayLike, name: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"{name} must be (N, F) with N >= 2, got shape {array.shape}")
    return array


def frechet_distance(features_a: ArrayLike, features_b: ArrayLike, eps: float = 1e-6) -> float:
    r"""Frechet distance between Gaussians fitted to two feature sets (the FID formula).

    ``|mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^{1/2})``, computed in float64 with
    `scipy.linalg.sqrtm`, keeping the real part. For few samples (N <= F) or dead features the
    covariances are singular; if the square root then warns or is not finite, `eps` is added to
    both diagonals and it is retried.
    The small-N estimate is biased upwards, so compare distances only at equal sample sizes.

    Args:
        features_a (`torch.Tensor` or `np.ndarray`): (N_a, F) features.
        features_b (`torch.Tensor` or `np.ndarray`): (N_b, F) features.
        eps (`float`, defaults to 1e-6): Diagonal offset, used only when the plain square root fails.

    Returns:
        `float`: the distance (>= 0; 0 for identical feature sets).
    """
    linalg = require_scipy()
    a, b = _as_2d_float64(features_a, "features_a"), _as_2d_float64(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature widths differ: {a.shape[1]} vs {b.shape[1]}")
    mean_diff = a.mean(axis=0) - b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
        # sqrtm warns (rather than fails) on singular products; treat that as needing the offset.
        singular = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught)
        if singular or not np.all(np.isfinite(covmean)):
            offset = np.eye(len(cov_a)) * eps
            covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    # Round-off gives sqrtm a tiny imaginary part on (near-)singular products; it carries no signal.
    covmean = np.real(covmean)
    distance = mean_diff @ mean_diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)
    # Identical inputs can land a hair below zero.
    return max(float(distance), 0.0)


def classifier_frechet_distance(
    classifier: nn.Module, images_a: torch.Tensor, images_b: torch.Tensor, batch_size: int = 256
) -> float:
    r"""[`frechet_distance`] between two image sets in the classifier's feature space.

    Args:
        classifier (`nn.Module`): Must have ``features(x) -> (B, F)``, e.g. [`DigitClassifier`].
        images_a (`torch.Tensor`): (N_a, 1 or 3, 32, 32) images in [0, 1], e.g. real held-out digits.
        images_b (`torch.Tensor`): (N_b, 1 or 3, 32, 32) images in [0, 1], e.g. samples.
        batch_size (`int`, defaults to 256): Images per forward pass.

    Returns:
        `float`: the distance.
    """
    features_a = classifier_features(classifier, images_a, batch_size)
    features_b = classifier_features(classifier, images_b, batch_size)
    return frechet_distance(features_a, features_b)


def label_histogram(predicted_labels: ArrayLike, num_classes: int = 10) -> torch.Tensor:
    """Count of each class in 0..`num_classes`-1, shape (`num_classes`,) int64."""
    labels = torch.as_tensor(predicted_labels).long().flatten()
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return torch.bincount(labels, minlength=num_classes)


def label_entropy(predicted_labels: ArrayLike, num_classes: int = 10) -> float:
    r"""Shannon entropy, in bits, of the label distribution.

    ``log2(num_classes)`` (3.32 bits for digits) for a perfectly even spread, 0 when every
    label is the same; a drop on unconditional samples signals mode collapse.

    Args:
        predicted_labels (`torch.Tensor` or array-like): (N,) labels, usually [`predict_labels`] output.
        num_classes (`int`, defaults to 10): Number of classes.

    Returns:
        `float`: entropy in bits.
    """
    counts = label_histogram(predicted_labels, num_classes).double()
    if counts.sum() == 0:
        raise ValueError("label_entropy needs at least one label")
    p = counts[counts > 0] / counts.sum()
    # max() clamps round-off below zero; + 0.0 turns the -0.0 of a single class into 0.0.
    return max(float(-(p * torch.log2(p)).sum()), 0.0) + 0.0


def nearest_neighbour_distance(
    samples: torch.Tensor,
    train_images: torch.Tensor,
    batch_size: int = 256,
    return_indices: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    r"""Per-pixel RMS distance from each sample to its closest training image.

    ``sqrt(mean((sample - train)^2))`` over all pixels, so distances lie in [0, 1] for images in
    [0, 1] and do not depend on the image size. Near-zero values mean a memorised training digit.
    The neighbour is found with one matrix product per batch of samples; its distance is then
    recomputed directly, so an exact copy gives exactly 0. If one set is grey and the other
    RGB, both are compared as grey (channel mean).

    Args:
        samples (`torch.Tensor`): (N, C, H, W) images.
        train_images (`torch.Tensor`): (M, C', H, W) training images.
        batch_size (`int`, defaults to 256): Samples compared per matrix product.
        return_indices (`bool`, defaults to `False`): Also return each neighbour's index in `train_images`.

    Returns:
        `torch.Tensor` of shape (N,) (float32), or a tuple of it and the (N,) int64 indices.
    """
    if samples.ndim == 4 and train_images.ndim == 4 and samples.shape[1] != train_images.shape[1]:
        samples, train_images = samples.mean(dim=1, keepdim=True), train_images.mean(dim=1, keepdim=True)
    if samples.shape[1:] != train_images.shape[1:]:
        raise ValueError(f"image shapes differ: {tuple(samples.shape[1:])} vs {tuple(train_images.shape[1:])}")
    if len(train_images) == 0:
        raise ValueError("nearest_neighbour_distance needs at least one training image")
    train = train_images.detach().flatten(1).float().cpu()
    queries = samples.detach().flatten(1).float().cpu()
    train_sq = (train * train).sum(dim=1)
    distances, indices = [], []
    for start in range(0, len(queries), batch_size):
        query = queries[start : start + batch_size]
        # |q - t|^2 up to the per-query constant |q|^2, which does not change the argmin.
        nearest = (train_sq[None, :] - 2.0 * query @ train.T).argmin(dim=1)
        distances.append((query - train[nearest]).pow(2).mean(dim=1).sqrt())
        indices.append(nearest)
    distance = torch.cat(distances) if distances else torch.empty(0)
    index = torch.cat(indices) if indices else torch.empty(0, dtype=torch.long)
    return (distance, index) if return_indices else distance
