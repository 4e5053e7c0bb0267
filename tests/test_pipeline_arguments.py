"""What `MNISTDDIMPipeline` accepts as arguments and what it refuses: every bad argument to `__call__`,
`encode_prompt` and `invert` raises a ValueError naming the argument and what is accepted, before any work and
instead of NaN images; `invert` takes PIL images and arrays as the tensors they hold."""

import time

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler
from tiny_sampling import sample, seeded

from pipeline_mnist_ddim.lesson import TEXT_LABELS
from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline


pytestmark = pytest.mark.usefixtures("one_thread")


ALL_WORDS = [word for pair in TEXT_LABELS for word in pair]


# ---------------------------------------------------------------- prompts


def test_unknown_word_is_refused_with_the_accepted_words(tiny_pipeline):
    with pytest.raises(ValueError) as error:
        sample(tiny_pipeline, prompt="eleven")
    message = str(error.value)
    assert "eleven" in message
    assert all(repr(word) in message for word in ALL_WORDS)


# ---------------------------------------------------------------- argument checks


INVALID_ARGUMENTS = {
    "zero steps": (dict(num_inference_steps=0), "num_inference_steps"),
    "1001 steps": (dict(num_inference_steps=1001), "num_inference_steps"),
    "negative eta": (dict(eta=-0.1), "eta"),
    "negative guidance": (dict(prompt="seven", guidance_scale=-1.0), "guidance_scale"),
    "nan guidance": (dict(prompt="seven", guidance_scale=float("nan")), "guidance_scale"),
    "infinite guidance": (dict(prompt="seven", guidance_scale=float("inf")), "guidance_scale"),
    "eta just above one": (dict(eta=1.01), "eta"),
    "eta two": (dict(eta=2.0), "eta"),
    "eta huge": (dict(eta=1e6), "eta"),
    "nan eta": (dict(eta=float("nan")), "eta"),
    "infinite eta": (dict(eta=float("inf")), "eta"),
    "nan latents": (dict(latents=torch.full((1, 1, 32, 32), float("nan"))), "latents"),
    "infinite latents": (dict(latents=torch.full((1, 1, 32, 32), float("inf"))), "latents"),
    "nan prompt_embeds": (dict(prompt_embeds=torch.full((1, 77, 32), float("nan"))), "prompt_embeds"),
    "nan negative_prompt_embeds": (
        dict(
            prompt_embeds=torch.zeros(1, 77, 32),
            negative_prompt_embeds=torch.full((1, 77, 32), float("nan")),
            guidance_scale=2.0,
        ),
        "negative_prompt_embeds",
    ),
    "negative_prompt_embeds of another shape": (
        dict(prompt_embeds=torch.zeros(1, 77, 32), negative_prompt_embeds=torch.zeros(2, 77, 32)),
        "negative_prompt_embeds",
    ),
    "negative prompt without prompt": (dict(negative_prompt="1"), "negative_prompt"),
    "two negative prompts for one prompt": (dict(prompt="7", negative_prompt=["1", "2"]), "negative prompts"),
    "zero images per prompt": (dict(num_images_per_prompt=0), "num_images_per_prompt"),
    "fractional images per prompt": (dict(num_images_per_prompt=1.5), "num_images_per_prompt"),
    "fractional batch size": (dict(batch_size=2.0), "batch_size"),
    "batch size other than the prompt count": (dict(prompt=["7", "3"], batch_size=4), "batch_size"),
    "guidance without prompt": (dict(guidance_scale=2.0), "guidance_scale"),
    "latents of wrong shape": (dict(latents=torch.zeros(1, 1, 28, 28)), "latents"),
    "three generators for two images": (dict(batch_size=2, generator=[torch.Generator()] * 3), "generator"),
    "empty prompt list": (dict(prompt=[]), "prompt"),
    "empty prompt": (dict(prompt=""), "prompt"),
    "blank prompt": (dict(prompt="   "), "prompt"),
    "zero batch size": (dict(batch_size=0), "batch_size"),
    "unknown output type": (dict(output_type="jpeg"), "output_type"),
    "True as a step count": (dict(num_inference_steps=True), "num_inference_steps"),
    "prompt_embeds narrower than the UNet's context": (dict(prompt_embeds=torch.zeros(1, 77, 16)), "prompt_embeds"),
    "prompt_embeds as nested lists": (dict(prompt_embeds=[[[0.0] * 32]]), "prompt_embeds"),
    "latents as a numpy array": (dict(latents=np.zeros((1, 1, 32, 32), dtype=np.float32)), "latents"),
    "an int as the generator": (dict(generator=42), "generator"),
    "a seed among the generators": (dict(batch_size=2, generator=[torch.Generator(), 7]), "generator"),
    "an empty generator list": (dict(generator=[]), "generator"),
    "cross_attention_kwargs as pairs": (dict(cross_attention_kwargs=[("scale", 0.5)]), "cross_attention_kwargs"),
    "a NaN LoRA scale": (dict(cross_attention_kwargs={"scale": float("nan")}), "cross_attention_kwargs"),
}


@pytest.mark.parametrize("kwargs, named", INVALID_ARGUMENTS.values(), ids=INVALID_ARGUMENTS.keys())
def test_invalid_arguments_raise_a_value_error_naming_them(tiny_pipeline, kwargs, named):
    with pytest.raises(ValueError, match=named):
        sample(tiny_pipeline, **kwargs)


def _nan_latents(pipe, step, timestep, tensors):
    return {"latents": torch.full_like(tensors["latents"], float("nan"))}


# Finite inputs too large for float32 arithmetic: without a check they give NaN latents, i.e. black PIL images.
EXTREME_INPUTS = {
    "guidance scale 1e30": (dict(prompt="seven", guidance_scale=1e30), "guidance_scale"),
    "latents of 1e30": (dict(latents=torch.full((1, 1, 32, 32), 1e30)), "latents"),
    "prompt_embeds of 1e38": (dict(prompt_embeds=torch.full((1, 77, 32), 1e38)), "prompt_embeds"),
    "a callback returning NaN latents": (
        dict(callback_on_step_end=_nan_latents, callback_on_step_end_tensor_inputs=["latents"]),
        "callback_on_step_end",
    ),
}


@pytest.mark.parametrize("kwargs, named", EXTREME_INPUTS.values(), ids=EXTREME_INPUTS.keys())
@pytest.mark.parametrize("output_type", ["pil", "latent"])
def test_inputs_that_overflow_are_refused_instead_of_giving_nan_images(tiny_pipeline, kwargs, named, output_type):
    with pytest.raises(ValueError) as error:
        sample(tiny_pipeline, output_type=output_type, **kwargs)
    message = str(error.value)
    assert f"`{named}`" in message and "NaN or infinite" in message, message


def test_pipeline_without_text_encoder_refuses_prompts_clearly(unconditional_pipeline):
    with pytest.raises(ValueError, match="no text encoder"):
        sample(unconditional_pipeline, prompt="seven")


# ---------------------------------------------------------------- schedulers


@pytest.mark.parametrize(
    "override", [dict(clip_sample=True), dict(prediction_type="v_prediction"), dict(thresholding=True)]
)
def test_scheduler_config_that_cannot_reproduce_the_lesson_is_rejected(tiny_unet, override):
    scheduler = DDIMScheduler.from_config(lesson_ddim_scheduler().config, **override)
    with pytest.raises(ValueError, match=next(iter(override))):
        MNISTDDIMPipeline(unet=tiny_unet, scheduler=scheduler)


# ---------------------------------------------------------------- inversion inputs


def _digits(batch_size: int, seed: int) -> np.ndarray:
    """8-bit grayscale pixels, (B, 32, 32)."""
    return (torch.rand(batch_size, 32, 32, generator=seeded(seed)) * 255).round().to(torch.uint8).numpy()


INVALID_IMAGES = {
    "a NaN pixel": (lambda: torch.full((1, 1, 32, 32), float("nan")), "NaN"),
    "an infinite pixel": (lambda: torch.full((1, 1, 32, 32), float("inf")), "NaN or infinite"),
    "28 x 28 digits": (lambda: torch.rand(1, 1, 28, 28), "28x28"),
    "three channels": (lambda: torch.rand(1, 3, 32, 32), "(1, 3, 32, 32)"),
    "0-255 floats": (lambda: torch.full((1, 1, 32, 32), 255.0), "[0, 1]"),
    "[-1, 1] images": (lambda: torch.full((1, 1, 32, 32), -1.0), "[0, 1]"),
    "a uint8 tensor": (lambda: torch.zeros(1, 1, 32, 32, dtype=torch.uint8), "floats in [0, 1]"),
    "a uint8 array": (lambda: _digits(1, 0)[0], "floats in [0, 1]"),
    "a 28 x 28 PIL image": (lambda: PIL.Image.new("L", (28, 28)), "28x28"),
    "a file name": (lambda: "digit.png", "str"),
    "an empty list": (lambda: [], "list"),
    "a tensor and a PIL image": (lambda: [torch.rand(1, 32, 32), PIL.Image.new("L", (32, 32))], "mixes"),
}


@pytest.mark.parametrize("make_images, expected", INVALID_IMAGES.values(), ids=INVALID_IMAGES.keys())
def test_invert_refuses_images_it_cannot_invert_naming_the_argument(tiny_pipeline, make_images, expected):
    with pytest.raises(ValueError) as error:
        tiny_pipeline.invert(make_images(), num_inference_steps=2)
    message = str(error.value)
    assert "`images`" in message and expected in message, message


@pytest.mark.parametrize(
    "make_images",
    [
        lambda: torch.zeros(1, 1, 4096, 4096),
        lambda: np.zeros((4096, 4096), dtype=np.float32),
        lambda: PIL.Image.new("L", (4096, 4096)),
    ],
    ids=["tensor", "numpy", "PIL"],
)
def test_invert_refuses_a_4096_pixel_image_before_any_work(tiny_pipeline, make_images, monkeypatch):
    images, calls = make_images(), []
    monkeypatch.setattr(tiny_pipeline.unet, "forward", lambda *args, **kwargs: calls.append(1))
    start = time.perf_counter()
    with pytest.raises(ValueError, match="4096x4096"):
        tiny_pipeline.invert(images)
    assert calls == [] and time.perf_counter() - start < 2.0  # refused from the size alone (it took 17.6 s)


def test_invert_takes_pil_images_and_numpy_arrays_as_the_tensor_they_hold(tiny_pipeline):
    pixels = _digits(2, seed=31)
    unit = pixels.astype(np.float32) / 255  # what a diffusers image processor makes of 8-bit pixels
    expected = tiny_pipeline.invert(torch.from_numpy(unit).unsqueeze(1), num_inference_steps=2)
    as_pil = [PIL.Image.fromarray(p) for p in pixels]
    for images in (
        as_pil,
        [image.convert("RGB") for image in as_pil],  # gray RGB converts back to the same gray levels
        unit[..., None],  # (B, H, W, C)
        list(unit),  # (H, W) each
        [torch.from_numpy(u).unsqueeze(0) for u in unit],  # (C, H, W) each
    ):
        assert torch.equal(tiny_pipeline.invert(images, num_inference_steps=2), expected)
