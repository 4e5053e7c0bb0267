"""Pipeline-level LoRA through diffusers' loader mixin (peft under the hood), on the tiny network.

A LoRA file is made as a trainer would: peft adapters (non-zero) on a copy of the UNet's
attention projections, saved with `save_lora_weights`. The pipeline must then sample
what that adapted UNet samples (to its float32 rounding), and the mixin's switches must do what they say.
The LoRA scale in `cross_attention_kwargs` reaches the UNet and the text encoder for one call only.
"""

import copy

import pytest
import torch
from conftest import seeded_latents
from peft import LoraConfig  # a test dependency (the [test] extra)
from peft.utils import get_peft_model_state_dict
from tiny_sampling import sample as sample_tensor
from yardsticks import float32_rounding

from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline


pytestmark = pytest.mark.usefixtures("one_thread")

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def make_pipeline(unet, tiny_text_encoder):
    text_encoder, tokenizer = tiny_text_encoder
    pipe = MNISTDDIMPipeline(
        unet=unet, scheduler=lesson_ddim_scheduler(), text_encoder=text_encoder, tokenizer=tokenizer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


CALL = dict(prompt="7", num_inference_steps=3, output_type="pt")


def sample(pipe):
    return pipe(latents=seeded_latents(1, seed=3), **CALL).images


@pytest.fixture(scope="module")
def adapted_unet(tiny_unet):
    unet = copy.deepcopy(tiny_unet)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    return unet


@pytest.fixture(scope="module")
def lora_folder(adapted_unet, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    MNISTDDIMPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(adapted_unet))
    return folder


@pytest.fixture
def pipe(tiny_unet, tiny_text_encoder):
    """Its own UNet: loading adapters changes the model in place."""
    return make_pipeline(copy.deepcopy(tiny_unet), tiny_text_encoder)


@pytest.fixture(scope="module")
def base_images(tiny_unet, tiny_text_encoder):
    return sample(make_pipeline(tiny_unet, tiny_text_encoder))


def test_load_lora_weights_samples_what_the_adapted_unet_samples(
    pipe, lora_folder, adapted_unet, tiny_text_encoder, base_images
):
    pipe.load_lora_weights(lora_folder, adapter_name="digits")
    images = sample(pipe)
    # The loaded adapter weights are the file's tensors, at other memory offsets than the adapted UNet's, which
    # some CPUs' kernels sum in another order: a few times the call's own float32 rounding, not bit for bit.
    adapted = make_pipeline(adapted_unet, tiny_text_encoder)
    tolerance = 4 * float32_rounding(adapted, latents=seeded_latents(1, seed=3), **CALL)
    assert (images - sample(adapted)).abs().max().item() <= tolerance
    assert (images - base_images).abs().max().item() > 0.01


def test_set_adapters_weight_zero_gives_the_base_images(pipe, lora_folder, base_images):
    pipe.load_lora_weights(lora_folder, adapter_name="digits")
    pipe.set_adapters(["digits"], adapter_weights=[0.0])
    assert torch.equal(sample(pipe), base_images)


def test_fuse_lora_keeps_the_images(pipe, lora_folder):
    pipe.load_lora_weights(lora_folder, adapter_name="digits")
    adapted = sample(pipe)
    pipe.fuse_lora()
    # Fused: one matmul instead of base + low-rank, float32 rounding.
    assert (sample(pipe) - adapted).abs().max().item() <= 1e-4


def test_unload_lora_weights_restores_the_base_images(pipe, lora_folder, base_images):
    pipe.load_lora_weights(lora_folder, adapter_name="digits")
    pipe.unload_lora_weights()
    assert torch.equal(sample(pipe), base_images)


# ---------------------------------------------------------------- cross_attention_kwargs and the LoRA scale


@pytest.fixture
def lora_pipeline(tiny_unet, tiny_text_encoder):
    """Own copies of the UNet and text encoder, each with a LoRA adapter that changes its output."""
    from peft import LoraConfig, inject_adapter_in_model  # a test dependency (the [test] extra)

    text_encoder, tokenizer = tiny_text_encoder
    unet, text_encoder = copy.deepcopy(tiny_unet), copy.deepcopy(text_encoder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet.add_adapter(LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False))
        # peft itself: transformers' `add_adapter` wants a newer peft than the [test] extra pins
        inject_adapter_in_model(
            LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False), text_encoder
        )
    pipe = MNISTDDIMPipeline(
        unet=unet, scheduler=lesson_ddim_scheduler(), text_encoder=text_encoder, tokenizer=tokenizer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _without_adapters(pipe, run):
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for model in (pipe.unet, pipe.text_encoder) for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        return run()
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def test_lora_scale_zero_in_cross_attention_kwargs_samples_the_base_model(lora_pipeline):
    latents = seeded_latents(1, seed=21)
    adapted = sample_tensor(lora_pipeline, prompt="7", latents=latents)
    base = _without_adapters(lora_pipeline, lambda: sample_tensor(lora_pipeline, prompt="7", latents=latents))
    assert (adapted - base).abs().max().item() > 0.01  # the adapters matter, so the next line says something
    off = sample_tensor(lora_pipeline, prompt="7", latents=latents, cross_attention_kwargs={"scale": 0.0})
    assert torch.equal(off, base)
    # the scale holds for one call only: the layers are scaled back afterwards
    assert torch.equal(sample_tensor(lora_pipeline, prompt="7", latents=latents), adapted)


def test_lora_scale_reaches_the_text_encoder_and_is_undone_even_when_encoding_fails(lora_pipeline):
    cpu = torch.device("cpu")
    adapted = lora_pipeline.encode_prompt("7", cpu)[0]
    base = _without_adapters(lora_pipeline, lambda: lora_pipeline.encode_prompt("7", cpu)[0])
    assert not torch.equal(adapted, base)
    assert torch.equal(lora_pipeline.encode_prompt("7", cpu, lora_scale=0.0)[0], base)
    with pytest.raises(ValueError, match="unknown words"):
        lora_pipeline.encode_prompt("eleven", cpu, lora_scale=0.5)
    assert torch.equal(lora_pipeline.encode_prompt("7", cpu)[0], adapted)
