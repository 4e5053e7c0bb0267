"""Schedulers swapped in with `from_config` sample what they should.

On the tiny network, three swaps are the lesson's DDIM written in other coordinates, so they
must give DDIM's images to float rounding: Euler is DDIM with eta = 0 in the variables
x / sqrt(alpha_bar) and sigma = sqrt((1 - alpha_bar) / alpha_bar) (so it needs the latents
scaled by `init_noise_sigma`); Euler-ancestral and DDPM take DDIM's eta = 1 step (the DDPM
posterior) and draw the same noise from the same generator. The higher-order solvers (Heun,
DPM-Solver++, UniPC, PNDM) have no such identity: the slow test judges them, and every other
scheduler the demo offers, on the embedded default with the project's digit classifier.
"""

import pytest
import torch
from conftest import seeded_latents
from diffusers import (
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)

from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
from pipeline_mnist_ddim.tools.demo.limits import SCHEDULERS


pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 10
PROMPTS = ["7", "3"]
# Measured: <= 3.5e-5 (float32 steps in other coordinates).
TOLERANCE = 1e-4


def sample(pipe, scheduler_class=None, **kwargs):
    if scheduler_class is not None:
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    return pipe(prompt=PROMPTS, num_inference_steps=STEPS, output_type="pt", **kwargs).images


def test_euler_samples_ddims_eta_zero_images(tiny_pipeline):
    latents = seeded_latents(2, seed=5)
    ddim = sample(tiny_pipeline, latents=latents, eta=0.0)
    euler = sample(tiny_pipeline, EulerDiscreteScheduler, latents=latents)
    assert tiny_pipeline.scheduler.init_noise_sigma > 10  # without it the images would be far off
    assert (euler - ddim).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("scheduler_class", [EulerAncestralDiscreteScheduler, DDPMScheduler])
def test_ancestral_samplers_sample_ddims_eta_one_images_from_the_same_generator(tiny_pipeline, scheduler_class):
    ddim = sample(tiny_pipeline, eta=1.0, generator=torch.Generator().manual_seed(3))
    swapped = sample(tiny_pipeline, scheduler_class, generator=torch.Generator().manual_seed(3))
    assert (swapped - ddim).abs().max().item() <= TOLERANCE


# ---------------------------------------------------------------- the embedded default, judged by the classifier

DEFAULT_STEPS = 20
DIGITS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def default_pipeline():
    """The embedded default's weights under this checkout's pipeline class (the folder's own code may be older)."""
    from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder

    pipe = MNISTDDIMPipeline.from_pipe(load_pipeline_folder(dtype=torch.float32))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def classifier():
    from pipeline_mnist_ddim.tools.classifier import load_default_classifier

    return load_default_classifier()


@pytest.mark.slow
@pytest.mark.parametrize("name", SCHEDULERS)
def test_swapped_scheduler_draws_the_prompted_digits_on_the_default(default_pipeline, classifier, name):
    """Every scheduler the demo offers, swapped in as the demo swaps it; needs the pipeline's `init_noise_sigma`
    scaling (Euler and Heun start from sigma_max, not 1)."""
    from pipeline_mnist_ddim.tools.demo.work import MNISTDemo
    from pipeline_mnist_ddim.tools.metrics import predict_labels

    pipe = MNISTDemo(default_pipeline).with_scheduler(name)
    assert type(pipe.scheduler).__name__ == SCHEDULERS[name]
    images = pipe(
        prompt=DIGITS,
        num_inference_steps=DEFAULT_STEPS,
        output_type="pt",
        generator=[torch.Generator().manual_seed(100 + d) for d in range(10)],
    ).images
    labels = predict_labels(classifier, images).tolist()
    right = sum(label == digit for digit, label in enumerate(labels))
    assert right >= 9, f"{name}: read as {labels}"
