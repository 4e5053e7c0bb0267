"""The pipeline samples what Lesson 6 (DDIM) and Lesson 5 (DDPM) sample, from the same x_T and noise.

A network with random weights is no denoiser: both samplers then run off to values in the
hundreds, nearly every pixel of the [0, 1] images is clamped to 0 or 1 (the comparison says
little) and float32 rounding of those large values alone exceeds the tolerance. So both
networks, the lesson's and the converted one, are wrapped alike to predict
``eps = x_t + 0.05 * network(x_t, t, context)``: a rough denoiser of images near zero whose
samples stay in range, while the network still moves pixels by up to ~0.2 (far above the
tolerance), so a wrong timestep or context would show. Network parity on its own is
tested in test_conversion_parity.py.
"""

import copy
import itertools

import pytest
import torch
from conftest import TINY_CONTEXT, convert, perturbed_reference, seeded_latents

from pipeline_mnist_ddim.lesson import lesson_betas
from pipeline_mnist_ddim.lesson.reference import ddim_invert, ddim_sample, ddpm_sample
from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler, lesson_ddpm_scheduler
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline


pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = 1e-4  # max abs difference of the [0, 1] images
FLOAT64_TOLERANCE = 1e-8  # the same, 50 DDIM steps in float64: the math, not rounding
ROUNDING_MULTIPLE = 2  # float32: at most this many times the reference sampler's own float32 rounding
NETWORK_WEIGHT = 0.05
SHAPE = (2, 1, 32, 32)
PROMPTS = ["seven", "3"]


def wrap_as_denoisers(reference, unet):
    """Both networks predict x_t + 0.05 * network(...) until the returned hooks are removed."""
    return [
        reference.register_forward_hook(lambda module, args, out: args[0] + NETWORK_WEIGHT * out),
        unet.register_forward_hook(lambda module, args, out: type(out)(sample=args[0] + NETWORK_WEIGHT * out.sample)),
    ]


@pytest.fixture
def denoisers(tiny_reference, tiny_unet):
    """The shared tiny networks, wrapped as denoisers for the test's duration."""
    handles = wrap_as_denoisers(tiny_reference, tiny_unet)
    yield tiny_reference, tiny_unet
    for handle in handles:
        handle.remove()


def lesson_context(text_encoder, tokenizer, prompts):
    """Lesson 5e's encoding: padded to max length, truncated, no attention mask, last_hidden_state."""
    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return text_encoder(ids).last_hidden_state


def noise_stream(generator, shape):
    """What a scheduler draws per step from the same generator: one randn of the latents' shape."""
    return (torch.randn(shape, generator=generator) for _ in itertools.count())


def assert_images_match(images, reference_output):
    """Max abs difference of the [0, 1] images within TOLERANCE, on images that are not all clamped."""
    expected = reference_output.clamp(0, 1)
    assert ((expected > 0) & (expected < 1)).float().mean() > 0.5, "saturated images: the comparison says little"
    difference = (images - expected).abs().max().item()
    assert difference <= TOLERANCE, f"max abs difference {difference:.3g} > {TOLERANCE}"


@pytest.mark.parametrize("num_inference_steps", [10, 20, 50, 100])
def test_ddim_timesteps_are_the_lessons_range_walked_backwards(num_inference_steps):
    scheduler = lesson_ddim_scheduler()
    scheduler.set_timesteps(num_inference_steps)
    lesson = list(range(0, 1000, 1000 // num_inference_steps))
    assert scheduler.timesteps.tolist() == lesson[::-1]


@pytest.mark.parametrize("make_scheduler", [lesson_ddim_scheduler, lesson_ddpm_scheduler])
def test_schedulers_hold_the_lessons_betas_and_alpha_bars_exactly(make_scheduler):
    """Float64-built betas. diffusers' float32 "linear" schedule differs too little for the wrapped tiny
    network of the parity tests to show; schedulers.py reports ~2e-4 in a trained model's images."""
    scheduler = make_scheduler()
    assert torch.equal(scheduler.betas, lesson_betas())
    assert torch.equal(scheduler.alphas_cumprod, torch.cumprod(1 - lesson_betas(), dim=0))


def test_ddpm_scheduler_walks_all_1000_timesteps():
    scheduler = lesson_ddpm_scheduler()
    scheduler.set_timesteps(1000)
    assert scheduler.timesteps.tolist() == list(range(999, -1, -1))


def ddim_differences(reference, unet, x_t, context):
    """50 DDIM steps of the pipeline and of the reference, both wrapped as denoisers, from the same x_T and
    context: (float64 difference, float32 difference, the reference's own float32-vs-float64 difference)."""
    prompt_embeds = context[:, None, :] if context.dim() == 2 else context  # (B, D) is one token
    images = {}
    for dtype in (torch.float64, torch.float32):
        ref, net = (copy.deepcopy(module).to(dtype) for module in (reference, unet))  # hooks stay off the originals
        wrap_as_denoisers(ref, net)
        pipe = MNISTDDIMPipeline(unet=net, scheduler=lesson_ddim_scheduler())
        pipe.set_progress_bar_config(disable=True)
        sampled = pipe(latents=x_t.to(dtype), prompt_embeds=prompt_embeds.to(dtype), output_type="pt").images
        expected = ddim_sample(ref, x_t.to(dtype), context.to(dtype), num_inference_steps=50).clamp(0, 1)
        assert sampled.dtype == expected.dtype == dtype
        assert ((expected > 0) & (expected < 1)).float().mean() > 0.5, "saturated images: the comparison says little"
        images[dtype] = sampled, expected
    (sampled64, expected64), (sampled32, expected32) = images[torch.float64], images[torch.float32]
    return (
        (sampled64 - expected64).abs().max().item(),
        (sampled32 - expected32).abs().max().item(),
        (expected32.double() - expected64).abs().max().item(),
    )


def assert_ddim_exact(reference, unet, x_t, context):
    """float64 within FLOAT64_TOLERANCE; float32 within ROUNDING_MULTIPLE of the reference's own rounding."""
    float64_difference, float32_difference, own_rounding = ddim_differences(reference, unet, x_t, context)
    assert float64_difference <= FLOAT64_TOLERANCE, f"float64: {float64_difference:.3g}"
    assert own_rounding > 0, "float32 and float64 agree exactly: the yardstick says nothing"
    assert float32_difference <= ROUNDING_MULTIPLE * own_rounding, (
        f"float32: {float32_difference:.3g}, the reference's own rounding {own_rounding:.3g}"
    )


@pytest.mark.slow  # 50 steps in float64 too
def test_50_step_ddim_is_lesson6s_math_in_float64_and_its_rounding_in_float32(tiny_reference, tiny_unet):
    x_t = seeded_latents(2, seed=11)
    text = torch.randn(1, 77, TINY_CONTEXT, generator=torch.Generator().manual_seed(3))
    contexts = torch.cat([text, torch.zeros_like(text)])  # a prompt's and the lesson's unconditional context
    assert_ddim_exact(tiny_reference, tiny_unet, x_t, contexts)


def test_unconditional_ddim_matches_lesson6(tiny_pipeline, denoisers):
    reference, _ = denoisers
    x_t = seeded_latents(2, seed=11)
    images = tiny_pipeline(batch_size=2, latents=x_t, num_inference_steps=50, eta=0.0, output_type="pt").images
    expected = ddim_sample(reference, x_t, torch.zeros(2, TINY_CONTEXT), num_inference_steps=50, eta=0.0)
    assert_images_match(images, expected)


def test_conditional_ddim_matches_lesson6(tiny_pipeline, denoisers, tiny_text_encoder):
    reference, _ = denoisers
    x_t = seeded_latents(2, seed=12)
    images = tiny_pipeline(prompt=PROMPTS, latents=x_t, num_inference_steps=50, output_type="pt").images
    expected = ddim_sample(reference, x_t, lesson_context(*tiny_text_encoder, PROMPTS), num_inference_steps=50)
    assert_images_match(images, expected)


@pytest.mark.slow
def test_full_size_50_step_ddim_matches_lesson6():
    """Base width 128, context 768 (the course's network), perturbed weights, in float64 and float32."""
    reference = perturbed_reference(base_channels=128, context_dim=768, seed=5)
    assert_ddim_exact(reference, convert(reference), seeded_latents(1, seed=17), torch.zeros(1, 768))


def test_stochastic_ddim_matches_lesson6_with_the_same_noise(tiny_pipeline, denoisers):
    reference, _ = denoisers
    images = tiny_pipeline(
        batch_size=2, num_inference_steps=20, eta=0.8, generator=torch.Generator().manual_seed(13), output_type="pt"
    ).images
    generator = torch.Generator().manual_seed(13)  # the pipeline draws x_T first, then z once per step
    x_t = torch.randn(SHAPE, generator=generator)
    expected = ddim_sample(
        reference,
        x_t,
        torch.zeros(2, TINY_CONTEXT),
        num_inference_steps=20,
        eta=0.8,
        noises=noise_stream(generator, SHAPE),
    )
    assert_images_match(images, expected)
    deterministic = ddim_sample(reference, x_t, torch.zeros(2, TINY_CONTEXT), num_inference_steps=20)
    assert (images - deterministic.clamp(0, 1)).abs().max() > 0.01  # the noise really was injected


@pytest.mark.slow  # 1000 steps, each against the lesson's code
def test_ddpm_with_1000_steps_matches_lesson5_with_the_same_noise(denoisers):
    reference, unet = denoisers
    pipe = MNISTDDIMPipeline(unet=unet, scheduler=lesson_ddpm_scheduler())
    pipe.set_progress_bar_config(disable=True)
    shape = (1, 1, 32, 32)
    images = pipe(num_inference_steps=1000, generator=torch.Generator().manual_seed(14), output_type="pt").images
    generator = torch.Generator().manual_seed(14)  # x_T, then z at t = 999 .. 1 (none at t = 0)
    x_t = torch.randn(shape, generator=generator)
    expected = ddpm_sample(reference, x_t, torch.zeros(1, TINY_CONTEXT), noises=noise_stream(generator, shape))
    assert_images_match(images, expected)


@pytest.mark.parametrize("num_inference_steps", [10, pytest.param(50, marks=pytest.mark.slow)])
def test_inversion_matches_the_reference_ddim_encoder(
    tiny_pipeline, denoisers, tiny_text_encoder, num_inference_steps
):
    reference, _ = denoisers
    images = seeded_latents(2, seed=16).mul(0.25).add(0.5).clamp(0, 1)  # image-like values in [0, 1]
    latents = tiny_pipeline.invert(images, prompt=PROMPTS, num_inference_steps=num_inference_steps)
    expected = ddim_invert(reference, images, lesson_context(*tiny_text_encoder, PROMPTS), num_inference_steps)
    assert latents.std() > 0.5, "x_T should be noise-sized, not an image"
    difference = (latents - expected).abs().max().item()
    assert difference <= TOLERANCE, f"max abs difference {difference:.3g} > {TOLERANCE}"


def test_wrapped_network_still_shapes_the_samples(denoisers):
    """Guards the parity tests above: without the network's term the samples would differ by far more than TOLERANCE."""
    reference, _ = denoisers
    x_t = seeded_latents(2, seed=15)
    with_network = ddim_sample(reference, x_t, torch.zeros(2, TINY_CONTEXT), num_inference_steps=10)
    without_network = ddim_sample(lambda x, t, context: x, x_t, None, num_inference_steps=10)
    assert (with_network - without_network).abs().max() > 1000 * TOLERANCE
