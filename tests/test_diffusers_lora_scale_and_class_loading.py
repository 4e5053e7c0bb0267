"""The pipeline as a stock diffusers pipeline, part two: the LoRA scale in `cross_attention_kwargs`
reaches both models for one call only, and loading through the class uses the installed code (the folder's
copy still needs `trust_remote_code` through `DiffusionPipeline`); part one: test_diffusers_conventions.py."""

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import seeded_latents
from diffusers import DiffusionPipeline
from tiny_sampling import sample

from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
from pipeline_mnist_ddim.unet_mnist import MNISTUNet2DConditionModel


pytestmark = pytest.mark.usefixtures("one_thread")


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
    adapted = sample(lora_pipeline, prompt="7", latents=latents)
    base = _without_adapters(lora_pipeline, lambda: sample(lora_pipeline, prompt="7", latents=latents))
    assert (adapted - base).abs().max().item() > 0.01  # the adapters matter, so the next line says something
    off = sample(lora_pipeline, prompt="7", latents=latents, cross_attention_kwargs={"scale": 0.0})
    assert torch.equal(off, base)
    # the scale holds for one call only: the layers are scaled back afterwards
    assert torch.equal(sample(lora_pipeline, prompt="7", latents=latents), adapted)


def test_lora_scale_reaches_the_text_encoder_and_is_undone_even_when_encoding_fails(lora_pipeline):
    cpu = torch.device("cpu")
    adapted = lora_pipeline.encode_prompt("7", cpu)[0]
    base = _without_adapters(lora_pipeline, lambda: lora_pipeline.encode_prompt("7", cpu)[0])
    assert not torch.equal(adapted, base)
    assert torch.equal(lora_pipeline.encode_prompt("7", cpu, lora_scale=0.0)[0], base)
    with pytest.raises(ValueError, match="unknown words"):
        lora_pipeline.encode_prompt("eleven", cpu, lora_scale=0.5)
    assert torch.equal(lora_pipeline.encode_prompt("7", cpu)[0], adapted)


# ---------------------------------------------------------------- loading through the class


def _folder_code_that_must_not_run(folder: Path):
    """Replaces the folder's code copies with code that fails loudly if anything imports it."""
    code_files = [*folder.glob("*.py"), folder / "unet" / "unet_mnist.py"]
    assert {path.name for path in code_files} >= {"pipeline_mnist_ddim.py", "pipeline_checks.py", "unet_mnist.py"}
    for path in code_files:
        path.write_text("raise RuntimeError('the folder's code was imported')\n")


LOADS = {
    "plain": ({}, {}),
    "fp16 variant": (dict(variant="fp16"), dict(variant="fp16")),
    "dtype per component": ({}, dict(torch_dtype={"unet": torch.bfloat16, "default": torch.float32})),
    "device map": ({}, dict(device_map="cpu")),
}


@pytest.mark.parametrize("save_kwargs, load_kwargs", LOADS.values(), ids=LOADS.keys())
def test_from_pretrained_through_the_class_uses_the_installed_code_without_trust_remote_code(
    tiny_pipeline, tmp_path, save_kwargs, load_kwargs
):
    tiny_pipeline.save_pretrained(tmp_path, **save_kwargs)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_mnist_ddim", "MNISTDDIMPipeline"]  # still loads as remote code
    _folder_code_that_must_not_run(tmp_path)
    reloaded = MNISTDDIMPipeline.from_pretrained(tmp_path, **load_kwargs)
    assert type(reloaded) is MNISTDDIMPipeline and type(reloaded.unet) is MNISTUNet2DConditionModel
    dtype = load_kwargs.get("torch_dtype", {}).get("unet", torch.float32)
    assert reloaded.unet.dtype == dtype and reloaded.text_encoder.dtype == torch.float32
    for name in ("unet", "text_encoder"):  # the same weights, bit for bit
        original, loaded = getattr(tiny_pipeline, name).state_dict(), getattr(reloaded, name).state_dict()
        assert original.keys() == loaded.keys()
        assert all(torch.equal(original[key].to(loaded[key].dtype), loaded[key]) for key in original)
    if dtype == torch.float32:
        reloaded.set_progress_bar_config(disable=True)
        latents = seeded_latents(1, seed=22)
        expected = sample(tiny_pipeline, prompt="7", latents=latents)
        # Not bit for bit: with the weights equal (above), the reloaded UNet's float32 output still differs by
        # ~2e-6 on an AMD EPYC (images: 5.3e-6), a kernel-level rounding difference; 1e-4 is not another model.
        assert (sample(reloaded, prompt="7", latents=latents) - expected).abs().max().item() <= 1e-4


def test_folder_code_still_needs_trust_remote_code_through_diffusion_pipeline(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path)
    _folder_code_that_must_not_run(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(tmp_path)
