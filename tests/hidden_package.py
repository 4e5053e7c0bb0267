"""The opening of every script that must run where this package cannot be imported, and the script that loads a
folder there and samples it (LOAD_AND_SAMPLE).

The package is installed (editable) in the test environment, so an import hook hides it; a
folder or Hub repository loaded after this must carry all its own code.
"""

import os
import subprocess
import sys
from pathlib import Path


HIDE_PACKAGE = r"""
import importlib.abc, sys

class HidePackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pipeline_mnist_ddim" or name.startswith("pipeline_mnist_ddim."):
            raise ImportError(f"{name} is hidden: the folder must load from its own code")
        return None

sys.meta_path.insert(0, HidePackage())
try:
    import pipeline_mnist_ddim
except ImportError:
    pass
else:
    sys.exit("the package is still importable: the check would prove nothing")
"""


def run_without_package(script: str, *args: str, work: Path, modules_cache: Path) -> str:
    """Runs ``script`` (opening with ``HIDE_PACKAGE``) in a fresh offline Python with ``args``; returns its stdout.

    One thread, as in the test process (see conftest.one_thread); remote code goes to ``modules_cache``.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(modules_cache), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# Runs in the subprocess: load FOLDER without this package, sample, save the images; optionally re-save.
LOAD_AND_SAMPLE = (
    HIDE_PACKAGE
    + r"""

import json
import numpy as np
import torch
from diffusers import DiffusionPipeline

folder, images_path, resave_folder, settings = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
generator = torch.Generator().manual_seed(settings["seed"])
images = pipe(prompt=settings["prompts"], num_inference_steps=settings["steps"], generator=generator,
              output_type="np").images
np.save(images_path, images)
if resave_folder:
    pipe.save_pretrained(resave_folder)
print(type(pipe).__module__, type(pipe.unet).__module__)
"""
)
