"""What `MNISTDDIMPipeline` promises its callers, on a tiny converted network and text encoder: determinism, prompts
and guidance, outputs, callbacks, components; what it refuses: test_pipeline_arguments.py."""

import logging

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import seeded_latents
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from tiny_sampling import STEPS, sample, seeded

from pipeline_mnist_ddim.lesson import TEXT_LABELS, lesson_betas
from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
from pipeline_mnist_ddim.unet_mnist import MNISTUNet2DConditionModel


pytestmark = pytest.mark.usefixtures("one_thread")

ALL_WORDS = [word for pair in TEXT_LABELS for word in pair]


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
