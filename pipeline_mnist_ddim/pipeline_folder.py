"""Pipeline folders: loaded with their remote code, written self-contained and atomically with a model card."""

import os
import shutil
import tempfile
import warnings
from typing import Optional

from . import DEFAULT_PIPELINE_DIR
from .pipeline_mnist_ddim import MNistDDIMPipeline

MODEL_CARD = """---
library_name: diffusers
pipeline_tag: {pipeline_tag}
license: {license}
tags:
- diffusers
- ddim
- mnist
- mindiffusion
- custom-pipeline
---

# {title}

A Lesson 5e network of the [mindiffusion](https://github.com/swookey-thinky/mindiffusion) course
(a text-conditional MNIST DDPM), converted to diffusers, sampled with Lesson 6's 50-step DDIM.

- Source checkpoint: `{checkpoint}` (training step {step}{loss})
- Network: base width {base_channels}, {in_channels} channel(s), context dimension {cross_attention_dim}
- Text encoder: {text_encoder}
- Scheduler: `DDIMScheduler` with the lesson's float64 linear betas, `timestep_spacing="leading"`,
  `steps_offset=0`, `set_alpha_to_one=True`, `clip_sample=False`

{details}

## Use

```py
import torch
from diffusers import DiffusionPipeline
{load}
images = pipe(prompt=["seven", "3"], num_inference_steps=50, eta=0.0,
              generator=torch.Generator().manual_seed(42)).images
unconditional = pipe(batch_size=8).images
```

The folder holds its own code (`pipeline_mnist_ddim.py`, `unet/unet_mnist.py`), hence
`trust_remote_code=True`. Offline with a Hub id already in the cache, resolve it first:
`DiffusionPipeline.from_pretrained(huggingface_hub.snapshot_download(repo_id, local_files_only=True), trust_remote_code=True)`.
"""


class OutputFolderError(ValueError):
    """The output folder exists and holds files, and overwriting was not asked for."""


def model_card(pipe: MNistDDIMPipeline, checkpoint: str, meta: dict, text_encoder: str, repo: Optional[str] = None,
               details: str = "", license: str = "mit") -> str:  # fmt: skip
    config = pipe.unet.config
    loss = f", loss {meta['loss']:.4f}" if isinstance(meta.get("loss"), float) else ""
    return MODEL_CARD.format(
        pipeline_tag="text-to-image" if pipe.text_encoder is not None else "unconditional-image-generation",
        license=license,
        title=f"MNIST DDIM (Lesson 5e -> diffusers), base width {config.base_channels}",
        checkpoint=os.path.basename(checkpoint),
        step=meta.get("step", "unknown"),
        loss=loss,
        base_channels=config.base_channels,
        in_channels=config.in_channels,
        cross_attention_dim=config.cross_attention_dim,
        text_encoder=_describe_text_encoder(text_encoder),
        details=details,
        load=_load_snippet(repo),
    )


def _load_snippet(repo: Optional[str]) -> str:
    """The card's loading line(s): a Hub id as is; a local folder by a path that works from any directory."""
    if repo is None:
        return '\npipe = DiffusionPipeline.from_pretrained("path/to/folder", trust_remote_code=True)'
    # The card is written before the folder: "out/mnist" is local if "out" exists here.
    looks_local = (os.path.isabs(repo) or repo.startswith(".") or repo.count("/") != 1 or os.path.exists(repo)
                   or os.path.isdir(repo.split("/")[0]))  # fmt: skip
    if not looks_local:
        return f'\npipe = DiffusionPipeline.from_pretrained("{repo}", trust_remote_code=True)'
    if os.path.abspath(repo) == os.path.abspath(DEFAULT_PIPELINE_DIR):
        return (
            "from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR  # pip install mnist-ddim-diffusers\n\n"
            "pipe = DiffusionPipeline.from_pretrained(DEFAULT_PIPELINE_DIR, trust_remote_code=True)"
        )
    return f'\npipe = DiffusionPipeline.from_pretrained("{os.path.abspath(repo)}", trust_remote_code=True)'


def _describe_text_encoder(source: Optional[str]) -> str:
    if not source or source.lower() == "none":
        return "none (unconditional only)"
    if os.path.isdir(source):  # a local path means nothing to readers of the card: name it only
        return f"`{os.path.basename(os.path.normpath(source))}/` (a local folder; shipped here in `text_encoder/`, `tokenizer/`)"
    return f"`{source}`"


def load_pipeline_folder(source: Optional[str] = None, dtype=None):
    """A pipeline folder or Hub id (default: the embedded one), loaded through its own remote code.

    Pass ``dtype=torch.float32`` to run fp16-stored weights on a CPU, where fp16 fails or crawls.
    """
    from diffusers import DiffusionPipeline

    source = source or DEFAULT_PIPELINE_DIR
    looks_local = os.path.isabs(source) or source.startswith(".") or source.count("/") > 1 or "\\" in source
    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "model_index.json")):
        raise OSError(f"{source} is a folder but not a pipeline folder (it has no model_index.json)")
    if looks_local and not os.path.isdir(source):  # else the Hub client answers with a puzzling repo-id error
        raise OSError(f"no pipeline folder at {source}")
    with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; the old name works in all
        warnings.simplefilter("ignore", FutureWarning)
        return DiffusionPipeline.from_pretrained(source, trust_remote_code=True,
                                                 torch_dtype=dtype)  # fmt: skip


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuses a non-empty target before any work is done (and so before anything is lost)."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputFolderError(f"{output_dir} exists and is not a folder")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise OutputFolderError(f"{output_dir} is not empty: pass --overwrite to replace it, or choose another folder")


def save_pipeline_folder(pipe: MNistDDIMPipeline, output_dir: str, card: Optional[str] = None,
                         overwrite: bool = False) -> str:  # fmt: skip
    """Saves into a temporary sibling folder, then renames it into place: no partial output, ever."""
    check_output_dir(output_dir, overwrite)
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(output_dir) + "-", dir=parent)
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        if card is not None:
            with open(os.path.join(staging, "README.md"), "w") as f:
                f.write(card)
        if os.path.isdir(output_dir):
            retired = staging + "-old"
            os.replace(output_dir, retired)
            os.replace(staging, output_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, output_dir)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return output_dir


def push_folder_to_hub(folder: str, repo_id: str, private: bool = False) -> str:
    """Uploads a saved folder (code files included) with huggingface_hub."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True, private=private)
    return api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="Upload MNIST DDIM pipeline").commit_url
