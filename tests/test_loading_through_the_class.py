"""Loading a saved folder through the installed class uses the installed code, with no `trust_remote_code`
and without importing the folder's code files; through `DiffusionPipeline`, the folder's own code still needs
`trust_remote_code`."""

import json
from pathlib import Path

import pytest
import torch
from conftest import seeded_latents
from diffusers import DiffusionPipeline
from tiny_sampling import sample

from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
from pipeline_mnist_ddim.unet_mnist import MNISTUNet2DConditionModel


pytestmark = pytest.mark.usefixtures("one_thread")


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
