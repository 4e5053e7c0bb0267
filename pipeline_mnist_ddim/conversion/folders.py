"""Pipeline folders in and out: loaded with their remote code; written self-contained, atomically and
with a model card; uploaded to the Hub. Building a pipeline from a lesson checkpoint is
checkpoint_to_pipeline.py's job; the pipeline class itself is pipeline_mnist_ddim.py."""

import errno
import inspect
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from typing import TYPE_CHECKING, Optional, Sequence

from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR
from pipeline_mnist_ddim.conversion.errors import headline, terminal_safe
from pipeline_mnist_ddim.conversion.files import check_name_lengths, check_writable_location, is_hub_id
from pipeline_mnist_ddim.conversion.folder_checks import check_loaded_pipeline, check_pipeline_folder
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline


if TYPE_CHECKING:
    from huggingface_hub import ModelCard

CARD_TAGS = ["diffusers", "ddim", "mnist", "mindiffusion", "custom-pipeline"]
# A Jinja template (huggingface_hub.ModelCard.from_template); `card_data` is the YAML front matter.
MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A Lesson 5e network of the [mindiffusion](https://github.com/swookey-thinky/mindiffusion) course
(a text-conditional MNIST DDPM), converted to diffusers, sampled with Lesson 6's 50-step DDIM.

- Source checkpoint: {{ checkpoint }} (training step {{ step }}{{ loss }})
- Network: base width {{ base_channels }}, {{ in_channels }} channel(s), context dimension {{ cross_attention_dim }}
- Text encoder: {{ text_encoder }}
- Scheduler: `DDIMScheduler` with the lesson's float64 linear betas, `timestep_spacing="leading"`,
  `steps_offset=0`, `set_alpha_to_one=True`, `clip_sample=False`

{{ details }}

## Use

```py
import torch
from diffusers import DiffusionPipeline
{{ load }}
images = pipe(prompt=["seven", "3"], num_inference_steps=50, eta=0.0,
              generator=torch.Generator().manual_seed(42)).images
unconditional = pipe(batch_size=8).images
```

The folder holds its own code (`pipeline_mnist_ddim.py`, `unet/unet_mnist.py`), hence
`trust_remote_code=True`. Offline with a Hub id already in the cache, resolve it first:
`DiffusionPipeline.from_pretrained(huggingface_hub.snapshot_download(repo_id, local_files_only=True), trust_remote_code=True)`.

"""  # Jinja drops the last newline: the card still ends with one


class OutputFolderError(ValueError):
    """The output folder cannot be written, or replacing it could lose files that are not ours."""


PIPELINE_CLASS = [os.path.splitext(os.path.basename(inspect.getsourcefile(MNISTDDIMPipeline)))[0], "MNISTDDIMPipeline"]


def model_card(
    pipe: MNISTDDIMPipeline,
    checkpoint: str,
    meta: dict,
    text_encoder: str,
    repo: Optional[str] = None,
    details: str = "",
    license: str = "mit",
) -> "ModelCard":
    from huggingface_hub import ModelCard, ModelCardData

    config = pipe.unet.config
    loss = f", loss {meta['loss']:.4f}" if isinstance(meta.get("loss"), float) and math.isfinite(meta["loss"]) else ""
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="text-to-image" if pipe.text_encoder is not None else "unconditional-image-generation",
        license=license,
        tags=CARD_TAGS,
    )
    return ModelCard.from_template(
        card_data,
        template_str=MODEL_CARD_TEMPLATE,
        title=f"MNIST DDIM (Lesson 5e -> diffusers), base width {config.base_channels}",
        checkpoint=markdown_code(os.path.basename(checkpoint)),
        step=meta["step"] if isinstance(meta.get("step"), int) else "unknown",  # never raw text from a file
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
    # A bare name is an output folder here (uploads are named 'user/name'). The card is written
    # before the folder: "out/mnist" is local if "out" exists here.
    if is_hub_id(repo) and repo.count("/") == 1 and not os.path.isdir(repo.split("/")[0]):
        return f"\npipe = DiffusionPipeline.from_pretrained({python_string(repo)}, trust_remote_code=True)"
    if os.path.abspath(repo) == os.path.abspath(DEFAULT_PIPELINE_DIR):
        return (
            "from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR  # pip install mnist-ddim-diffusers\n\n"
            "pipe = DiffusionPipeline.from_pretrained(DEFAULT_PIPELINE_DIR, trust_remote_code=True)"
        )
    return (
        f"\npipe = DiffusionPipeline.from_pretrained({python_string(os.path.abspath(repo))}, trust_remote_code=True)"
    )


# Names from the command line and from files reach the card (Markdown, rendered as HTML on the Hub, and a
# snippet readers run): each is quoted so that it can only ever read as the text it is.


def python_string(text: str) -> str:
    """``text`` as a Python string literal on one line: a quote in a path cannot end the string and add code."""
    return '"' + terminal_safe(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def markdown_code(text: str) -> str:
    """``text`` as a Markdown code span, shown literally: no HTML, no emphasis, no way out of the span.

    The span's backtick fence is longer than any run of backticks inside (CommonMark), and control
    characters (a newline would end the paragraph) are written as escapes.
    """
    text = terminal_safe(text)
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    padding = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""  # CommonMark strips one each side
    return f"{fence}{padding}{text}{padding}{fence}"


def _describe_text_encoder(source: Optional[str]) -> str:
    if not source or source.lower() == "none":
        return "none (unconditional only)"
    if os.path.isdir(source):  # a local path means nothing to readers of the card: name it only
        name = markdown_code(os.path.basename(os.path.normpath(source)) + "/")
        return f"{name} (a local folder; shipped here in `text_encoder/`, `tokenizer/`)"
    return markdown_code(source)


def load_pipeline_folder(source: Optional[str] = None, dtype=None):
    """A pipeline folder or Hub id (default: the embedded one), loaded through its own remote code.

    Pass ``dtype=torch.float32`` to run fp16-stored weights on a CPU, where fp16 fails or crawls.
    """
    from diffusers import DiffusionPipeline

    source = source or DEFAULT_PIPELINE_DIR
    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "model_index.json")):
        raise OSError(f"{source} is a folder but not a pipeline folder (it has no model_index.json)")
    if not os.path.isdir(source) and not is_hub_id(source):  # else the Hub client answers with a puzzling error
        raise OSError(f"no pipeline folder at {source}")
    local = os.path.isdir(source)
    if local:  # configs within bounds, code that compiles, weight headers: before diffusers builds anything
        check_pipeline_folder(source)
    with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; the old name works in all
        warnings.simplefilter("ignore", FutureWarning)
        try:
            pipe = DiffusionPipeline.from_pretrained(source, trust_remote_code=True, torch_dtype=dtype)
        except (TypeError, IndexError, KeyError, AttributeError) as err:  # a config edited into nonsense
            raise ValueError(
                f"{source} could not be loaded as a pipeline (a config file holds "
                f"values of the wrong kind?): {type(err).__name__}: {err}"
            ) from err
    if local:
        check_loaded_pipeline(pipe, source)
    return pipe


def is_our_pipeline_folder(folder: str) -> bool:
    """Whether ``folder`` holds a ``model_index.json`` naming this project's pipeline class (a folder we wrote)."""
    try:
        with open(os.path.join(folder, "model_index.json")) as f:
            class_name = json.load(f).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return False
    return class_name in (PIPELINE_CLASS, PIPELINE_CLASS[1])


def _contains(folder: str, path: str) -> bool:
    folder, path = os.path.realpath(folder), os.path.realpath(path)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_dir(output_dir: str, overwrite: bool, keep: Sequence[str] = ()) -> None:
    """Refuses, before any work is done, every target whose writing could fail or lose files.

    With ``overwrite``, only a pipeline folder this project wrote is replaced, and never one that
    holds the working directory or any path in ``keep`` (the inputs).
    """
    if not output_dir or not output_dir.strip():
        raise OutputFolderError("the output folder is empty (an unset variable?): name a new folder")
    if os.path.normpath(output_dir) in (".", "..") or _contains(output_dir, os.getcwd()):
        raise OutputFolderError(f"{output_dir!r} is the current folder or holds it: name a new folder")
    if os.path.islink(output_dir):
        raise OutputFolderError(f"{output_dir} is a symbolic link: name a real folder (links are never replaced)")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputFolderError(f"{output_dir} exists and is not a folder")
    # The result is staged beside the target and renamed into place: its parent must be writable.
    parent = os.path.dirname(os.path.abspath(output_dir))
    check_writable_location(parent, "parent folder of the output", OutputFolderError)
    check_name_lengths(output_dir, "output folder", OutputFolderError)
    if not os.path.isdir(output_dir) or not os.listdir(output_dir):
        return
    if not overwrite:
        raise OutputFolderError(f"{output_dir} is not empty: pass --overwrite to replace it, or choose another folder")
    if not is_our_pipeline_folder(output_dir):
        raise OutputFolderError(
            f"{output_dir} is not a pipeline folder written by this converter (no model_index.json naming "
            f"{PIPELINE_CLASS[1]}): --overwrite only replaces such folders; choose another folder"
        )
    inputs = [path for path in keep if path and os.path.exists(path) and _contains(output_dir, path)]
    if inputs:
        raise OutputFolderError(f"{output_dir} holds the input {inputs[0]}: --overwrite would delete it")


def save_pipeline_folder(
    pipe: MNISTDDIMPipeline,
    output_dir: str,
    card: Optional["ModelCard"] = None,
    overwrite: bool = False,
    keep: Sequence[str] = (),
) -> str:
    """Saves into a temporary sibling folder, then renames it into place: no partial output, ever.

    The last step fails, keeping what is there, when another process wrote ``output_dir`` meanwhile
    (a rename onto a non-empty folder is refused by the OS), so of two racing writers exactly one wins.
    """
    check_output_dir(output_dir, overwrite, keep)
    output_dir = os.path.abspath(output_dir)
    replacing = os.path.isdir(output_dir) and bool(os.listdir(output_dir))  # checked: ours, and overwrite asked
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    # A short prefix: a legal 255-byte output name must not make the staging name too long.
    staging = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(output_dir)[:40] + "-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private (0700); the result is an ordinary folder
    retired = None
    try:
        _write_folder(pipe, card, staging, output_dir)
        if replacing and is_our_pipeline_folder(output_dir):  # still ours: retire it until the new one is in place
            retired = staging + "-old"
            os.rename(output_dir, retired)
        try:
            os.rename(staging, output_dir)
        except OSError as err:
            if retired is not None and not os.path.exists(output_dir):
                os.rename(retired, output_dir)
                retired = None
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                kept = f"; the folder it replaced is kept at {retired}" if retired is not None else ""
                raise OutputFolderError(
                    f"{output_dir} was written by another process meanwhile; left as it is, nothing saved{kept}"
                ) from err
            raise
        if retired is not None:
            shutil.rmtree(retired)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return output_dir


def _write_folder(pipe: MNISTDDIMPipeline, card: Optional["ModelCard"], staging: str, output_dir: str) -> None:
    """Writes the pipeline and its card into ``staging``; a failed write is an OSError naming ``output_dir``.

    safetensors reports its own I/O failures, a full disk included, as a SafetensorError (not an OSError):
    translated here so that the command says "no space left" in one line, not a traceback.
    """
    from safetensors import SafetensorError

    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        if card is not None:
            card.save(os.path.join(staging, "README.md"))
    except SafetensorError as err:
        message = str(err)
        if "os error 28" in message or "No space left" in message:
            raise OSError(errno.ENOSPC, "No space left on device", output_dir) from err
        raise OSError(errno.EIO, f"writing the weights failed ({message.strip()})", output_dir) from err
    except OSError as err:
        if err.errno == errno.ENOSPC:  # the staging folder's name means nothing to the user: name the target
            raise OSError(errno.ENOSPC, "No space left on device", output_dir) from err
        raise


class HubUploadError(OSError):
    """The folder could not be uploaded (offline, not logged in, refused); it stays saved locally."""


def check_hub_upload(repo_id: str) -> None:
    """Refuses an upload that cannot work, before the conversion: a malformed repo id, offline mode, no token."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubUploadError(f"--push_to_hub {repo_id!r} is not a Hub repo id ('name' or 'user/name')") from err
    if constants.HF_HUB_OFFLINE:
        raise HubUploadError(
            "cannot upload: offline mode is on (HF_HUB_OFFLINE is set). Unset it, or drop --push_to_hub and "
            "upload the folder later with `hf upload REPO_ID FOLDER`"
        )
    if get_token() is None:
        raise HubUploadError(
            "cannot upload: not logged in to the Hugging Face Hub. Log in with `hf auth login` "
            "(or `huggingface-cli login`), or set the HF_TOKEN environment variable"
        )


def push_folder_to_hub(folder: str, repo_id: str, private: bool = False) -> str:
    """Uploads a saved folder (code files included) with the pipeline's own uploader."""
    try:
        commit = MNISTDDIMPipeline.push_folder(
            folder, repo_id=repo_id, private=private, commit_message="Upload MNIST DDIM pipeline"
        )
    except Exception as err:  # HTTP, connection and auth errors come in many types; the folder is safe either way
        raise HubUploadError(
            f"uploading to {repo_id} failed ({headline(err)}); the folder is saved at {folder}"
        ) from err
    return commit.commit_url
