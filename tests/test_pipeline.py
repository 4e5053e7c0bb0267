"""What `MNISTDDIMPipeline` promises its callers, on a tiny converted network and text encoder."""

import copy
import logging
import time

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import seeded_latents
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging

from pipeline_mnist_ddim.lesson import TEXT_LABELS, lesson_betas
from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
from pipeline_mnist_ddim.unet_mnist import MNISTUNet2DConditionModel


pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 3  # behaviour, not quality: a few steps suffice
ALL_WORDS = [word for pair in TEXT_LABELS for word in pair]


def sample(pipe, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("output_type", "pt")
    return pipe(**kwargs).images


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def written_out_ddim(eps, latents, num_inference_steps=STEPS):
    """DDIM written out: the lesson scheduler's step on ``eps(x, t)``; images in [0, 1]."""
    scheduler = lesson_ddim_scheduler()
    scheduler.set_timesteps(num_inference_steps)
    x = latents
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(eps(x, t), t, x).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


# ---------------------------------------------------------------- determinism and seeds


def test_same_seed_gives_same_images(tiny_pipeline):
    first = sample(tiny_pipeline, batch_size=2, generator=seeded(0))
    second = sample(tiny_pipeline, batch_size=2, generator=seeded(0))
    assert torch.equal(first, second)


def test_different_seeds_give_different_images(tiny_pipeline):
    first = sample(tiny_pipeline, batch_size=2, generator=seeded(0))
    second = sample(tiny_pipeline, batch_size=2, generator=seeded(1))
    assert (first - second).abs().max() > 0.01


def test_same_latents_give_same_images(tiny_pipeline):
    latents = seeded_latents(2, seed=3)
    first = sample(tiny_pipeline, batch_size=2, latents=latents)
    assert torch.equal(first, sample(tiny_pipeline, batch_size=2, latents=latents))


def test_image_from_a_per_image_generator_does_not_depend_on_batch_size(tiny_pipeline):
    batch = sample(tiny_pipeline, batch_size=3, generator=[seeded(5), seeded(6), seeded(7)])
    alone = sample(tiny_pipeline, batch_size=1, generator=[seeded(6)])
    assert (batch[1] - alone[0]).abs().max().item() <= 1e-5


# ---------------------------------------------------------------- prompts and guidance


def test_guidance_scale_one_is_exactly_plain_conditional_sampling(tiny_pipeline):
    latents = seeded_latents(1, seed=8)
    images = sample(tiny_pipeline, prompt="seven", guidance_scale=1.0, latents=latents)
    context = tiny_pipeline.encode_prompt("seven", torch.device("cpu"))[0]
    plain = written_out_ddim(lambda x, t: tiny_pipeline.unet(x, t, encoder_hidden_states=context).sample, latents)
    assert torch.equal(images, plain)


def test_guidance_scale_above_one_changes_the_images(tiny_pipeline):
    latents = seeded_latents(1, seed=8)
    plain = sample(tiny_pipeline, prompt="seven", latents=latents)
    guided = sample(tiny_pipeline, prompt="seven", guidance_scale=3.0, latents=latents)
    assert (plain - guided).abs().max() > 0.01


def test_guidance_extrapolates_from_the_zero_context(tiny_pipeline):
    """eps = eps(zeros) + w * (eps(prompt) - eps(zeros)), as classifier-free guidance with the lesson's dropout."""
    unet, scale, latents = tiny_pipeline.unet, 3.0, seeded_latents(1, seed=9)
    context = tiny_pipeline.encode_prompt("seven", torch.device("cpu"))[0]

    def guided_eps(x, t):
        eps_text = unet(x, t, encoder_hidden_states=context).sample
        eps_zero = unet(x, t, encoder_hidden_states=torch.zeros_like(context)).sample
        return eps_zero + scale * (eps_text - eps_zero)

    images = sample(tiny_pipeline, prompt="seven", guidance_scale=scale, latents=latents)
    # The pipeline runs both contexts as one batch of 2: other kernels, rounding amplified by this random network.
    assert (images - written_out_ddim(guided_eps, latents)).abs().max().item() <= 1e-4


def test_prompts_are_lowercased_and_stripped(tiny_pipeline):
    latents = seeded_latents(1, seed=10)
    shouted = sample(tiny_pipeline, prompt="  SEVEN ", latents=latents)
    assert torch.equal(shouted, sample(tiny_pipeline, prompt="seven", latents=latents))


@pytest.mark.parametrize("prompt", ["7", "seven"])
def test_numeral_and_word_are_both_accepted(tiny_pipeline, prompt):
    assert sample(tiny_pipeline, prompt=prompt, num_inference_steps=1).shape == (1, 1, 32, 32)


def test_every_label_word_and_numeral_encodes(tiny_pipeline):
    embeds = tiny_pipeline.encode_prompt(ALL_WORDS, torch.device("cpu"))[0]
    assert embeds.shape[0] == len(ALL_WORDS) == 20


def test_num_images_per_prompt_repeats_each_prompt(tiny_pipeline):
    images = sample(tiny_pipeline, prompt=["seven", "3"], num_images_per_prompt=2, num_inference_steps=1)
    assert images.shape == (4, 1, 32, 32)


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


def test_pipeline_without_text_encoder_samples_unconditionally(unconditional_pipeline, tiny_pipeline):
    latents = seeded_latents(2, seed=16)
    images = sample(unconditional_pipeline, batch_size=2, latents=latents)
    assert torch.equal(images, sample(tiny_pipeline, batch_size=2, latents=latents))


# ---------------------------------------------------------------- outputs


def test_pt_output_is_a_batch_of_channel_first_images_in_unit_range(tiny_pipeline):
    images = sample(tiny_pipeline, batch_size=2, output_type="pt")
    assert isinstance(images, torch.Tensor) and images.dtype == torch.float32
    assert images.shape == (2, 1, 32, 32)
    assert images.min() >= 0 and images.max() <= 1


def test_np_output_is_a_batch_of_channel_last_images_in_unit_range(tiny_pipeline):
    images = sample(tiny_pipeline, batch_size=2, output_type="np")
    assert isinstance(images, np.ndarray) and images.shape == (2, 32, 32, 1)
    assert images.min() >= 0 and images.max() <= 1


def test_pil_output_is_a_list_of_32_pixel_images(tiny_pipeline):
    images = sample(tiny_pipeline, batch_size=2, output_type="pil")
    assert len(images) == 2 and all(isinstance(image, PIL.Image.Image) for image in images)
    assert all(image.size == (32, 32) for image in images)


def test_output_types_hold_the_same_pixels(tiny_pipeline):
    latents = seeded_latents(1, seed=17)
    as_pt = sample(tiny_pipeline, latents=latents, output_type="pt")[0, 0].numpy()
    as_np = sample(tiny_pipeline, latents=latents, output_type="np")[0, :, :, 0]
    as_pil = np.asarray(sample(tiny_pipeline, latents=latents, output_type="pil")[0], dtype=np.float32) / 255
    assert np.array_equal(as_pt, as_np)
    assert np.abs(as_pil - as_np).max() <= 1 / 255


def test_return_dict_false_gives_a_tuple(tiny_pipeline):
    (images,) = tiny_pipeline(num_inference_steps=1, output_type="pt", return_dict=False)
    assert images.shape == (1, 1, 32, 32)


def test_step_end_callback_receives_the_requested_tensors_every_step(tiny_pipeline):
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append((step, int(timestep), sorted(tensors), tensors["latents"].shape))
        return tensors

    sample(
        tiny_pipeline,
        prompt="seven",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
    )
    assert seen == [(i, t, ["latents", "prompt_embeds"], (1, 1, 32, 32)) for i, t in enumerate([666, 333, 0])]


def test_step_end_callback_can_replace_the_latents(tiny_pipeline):
    def zero_latents(pipe, step, timestep, tensors):
        return {"latents": torch.zeros_like(tensors["latents"])}

    images = sample(tiny_pipeline, callback_on_step_end=zero_latents, callback_on_step_end_tensor_inputs=["latents"])
    assert torch.equal(images, torch.full_like(images, 0.5))


# ---------------------------------------------------------------- components


def test_unet_is_a_diffusers_unet2dconditionmodel(tiny_pipeline):
    assert isinstance(tiny_pipeline.unet, UNet2DConditionModel)


def test_ddpm_scheduler_swapped_in_with_from_config_keeps_the_lesson_betas_and_samples(tiny_pipeline):
    tiny_pipeline.scheduler = DDPMScheduler.from_config(tiny_pipeline.scheduler.config)
    assert torch.equal(tiny_pipeline.scheduler.betas, lesson_betas())
    images = sample(tiny_pipeline, batch_size=2, num_inference_steps=4, generator=seeded(18))
    assert images.shape == (2, 1, 32, 32) and torch.isfinite(images).all()


@pytest.mark.parametrize(
    "override", [dict(clip_sample=True), dict(prediction_type="v_prediction"), dict(thresholding=True)]
)
def test_scheduler_config_that_cannot_reproduce_the_lesson_is_rejected(tiny_unet, override):
    scheduler = DDIMScheduler.from_config(lesson_ddim_scheduler().config, **override)
    with pytest.raises(ValueError, match=next(iter(override))):
        MNISTDDIMPipeline(unet=tiny_unet, scheduler=scheduler)


def test_bfloat16_unet_samples_close_to_float32(tiny_pipeline):
    latents = seeded_latents(2, seed=19)
    full = sample(tiny_pipeline, batch_size=2, latents=latents, num_inference_steps=10)
    tiny_pipeline.unet = copy.deepcopy(tiny_pipeline.unet).to(torch.bfloat16)  # the shared unet stays fp32
    half = sample(tiny_pipeline, batch_size=2, latents=latents, num_inference_steps=10)
    assert half.dtype == torch.float32  # latents and the update stay float32
    assert (half - full).abs().mean().item() < 0.05


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_unet_config_round_trips_without_warnings_and_gives_identical_outputs(tiny_unet, tmp_path):
    tiny_unet.save_pretrained(tmp_path)
    records, diffusers_logger = _Records(), diffusers_logging.get_logger("diffusers")
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_warning()
    diffusers_logger.addHandler(records)
    try:
        reloaded = MNISTUNet2DConditionModel.from_pretrained(tmp_path)
    finally:
        diffusers_logger.removeHandler(records)
        diffusers_logging.set_verbosity(verbosity)
    assert [r.getMessage() for r in records.records] == []
    loaded_from = "_name_or_path"
    assert {k: v for k, v in reloaded.config.items() if k != loaded_from} == dict(tiny_unet.config)
    x, t, context = seeded_latents(2, seed=20), torch.tensor([10, 900]), torch.randn(2, 8, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(x, t, context).sample, tiny_unet(x, t, context).sample)


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
