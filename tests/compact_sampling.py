"""Sampling a folder with a compact (or full) text encoder in a fresh process in which this package cannot be
imported, as test_compact_text_encoder.py and test_clip_tokenizer.py do, and the yardsticks they judge it by."""

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from hidden_package import LOAD_AND_SAMPLE, run_without_package
from yardsticks import float32_rounding

from pipeline_mnist_ddim.conversion.prompt_table import LESSON_PROMPTS


SEED, STEPS = 31, 2
SIZE_LIMIT = 5_000_000  # bytes: text_encoder/ + tokenizer/ of a compact folder at CLIP's width


HIDE_AND_LOAD = LOAD_AND_SAMPLE.split("folder, images_path")[0]  # the import hook and imports only


# Runs in the subprocess: load FOLDER without this package, sample the 20 prompts from fixed latents.
SAMPLE_PROMPTS = (
    HIDE_AND_LOAD
    + r"""
folder, images_path, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
prompts = settings["prompts"]
latents = torch.randn(len(prompts), 1, 32, 32, generator=torch.Generator().manual_seed(settings["seed"]))
images = pipe(prompt=prompts, latents=latents, num_inference_steps=settings["steps"], output_type="np").images
np.save(images_path, images)
report = {"refusal": None, "text_encoder": type(pipe.text_encoder).__module__}
try:
    pipe(prompt="eleven", num_inference_steps=1)
except ValueError as err:
    report["refusal"] = str(err)
print(json.dumps(report))
"""
)


def sample_in_fresh_process(folder: Path, work: Path, prompts=LESSON_PROMPTS):
    images_path = work / f"images-{folder.name}.npy"
    settings = json.dumps(dict(prompts=list(prompts), steps=STEPS, seed=SEED))
    modules_cache = work / f"hf_modules-{folder.name}"
    stdout = run_without_package(
        SAMPLE_PROMPTS, str(folder), str(images_path), settings, work=work, modules_cache=modules_cache
    )
    return np.load(images_path), json.loads(stdout.strip().splitlines()[-1])


def full_encoder_rounding(folder: Path, prompts=LESSON_PROMPTS) -> float:
    """``sample_in_fresh_process``'s call on ``folder``, float32 against float64 (tests/yardsticks.py): the scale of
    the rounding by which the full encoder's contexts, computed in another process from another file than
    the compact table's, may differ from the table's on some CPU."""
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(len(prompts), 1, 32, 32, generator=torch.Generator().manual_seed(SEED))
    return float32_rounding(pipe, prompt=list(prompts), latents=latents, num_inference_steps=STEPS, output_type="np")


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
