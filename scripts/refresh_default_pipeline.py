"""Re-write the embedded default pipeline with the current code, its weights unchanged.

    python scripts/refresh_default_pipeline.py            # in place (what build_default_pipeline.sh --refresh runs)
    python scripts/refresh_default_pipeline.py --output_dir /tmp/refreshed

Its training checkpoint is not shipped, so it cannot be converted again. Instead this loads
the folder with the package's own classes, in the dtype its weights are stored in, and saves
it through the package's writer: the current code files, the current text-encoder and
tokenizer formats, and a model card made from docs/default_model.md with the source
checkpoint's name, step and loss read from the old card. The UNet and text-encoder tensors
are compared with what was loaded before anything is replaced; any difference is an error.
"""

import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Tuple

from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR
from pipeline_mnist_ddim.tools.arguments import option
from pipeline_mnist_ddim.tools.cli import parse_settings


if TYPE_CHECKING:  # imported after parsing, so that --help answers at once
    import torch

    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_CARD_DETAILS = os.path.join(REPO_DIR, "docs", "default_model.md")
SOURCE_LINE = re.compile(
    r"Source checkpoint: `(?P<checkpoint>[^`]+)` \(training step (?P<step>\d+)(, loss (?P<loss>[\d.]+))?\)"
)
logger = logging.getLogger("refresh_default_pipeline")


@dataclass
class RefreshOptions:
    source: str = option(DEFAULT_PIPELINE_DIR, "the folder to refresh (the embedded one by default)")
    output_dir: str = option(DEFAULT_PIPELINE_DIR, "where to write it (in place by default)")


def stored_dtype(weights_file: str) -> "torch.dtype":
    from safetensors.torch import load_file

    dtypes = {tensor.dtype for tensor in load_file(weights_file).values()}
    if len(dtypes) != 1:
        raise ValueError(f"{weights_file} mixes dtypes {sorted(map(str, dtypes))}")
    return dtypes.pop()


def checkpoint_meta(card_file: str) -> Tuple[str, dict]:
    """The source checkpoint's name, step and loss, as the old model card states them."""
    with open(card_file) as f:
        match = SOURCE_LINE.search(f.read())
    if match is None:
        raise ValueError(f"{card_file} has no 'Source checkpoint: `NAME` (training step N, loss L)' line")
    meta = {"step": int(match["step"])}
    if match["loss"]:
        meta["loss"] = float(match["loss"])
    return match["checkpoint"], meta


def without_prefix(state_dict: dict) -> dict:
    """transformers 4.x names a CLIPTextModel's weights ``text_model.*``, 5.x without the prefix."""
    return {
        key[len("text_model.") :] if key.startswith("text_model.") else key: value for key, value in state_dict.items()
    }


def load_default(source: str) -> "MNISTDDIMPipeline":
    from diffusers import DDIMScheduler
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, CLIPTextModel

    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
    from pipeline_mnist_ddim.unet_mnist import MNISTUNet2DConditionModel

    dtype = stored_dtype(os.path.join(source, "unet", "diffusion_pytorch_model.safetensors"))
    # from its config and weights file rather than from_pretrained, which would record the local path in the config
    unet = MNISTUNet2DConditionModel.from_config(MNISTUNet2DConditionModel.load_config(source, subfolder="unet"))
    unet.load_state_dict(load_file(os.path.join(source, "unet", "diffusion_pytorch_model.safetensors")), strict=True)
    unet.to(dtype).eval()
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(source, "text_encoder"), dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(source, "tokenizer"))
    scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler")
    return MNISTDDIMPipeline(
        unet=unet, scheduler=scheduler, text_encoder=text_encoder.requires_grad_(False).eval(), tokenizer=tokenizer
    )


def assert_same_tensors(before: dict, after: dict, what: str) -> None:
    import torch

    if before.keys() != after.keys():
        raise RuntimeError(f"{what}: tensor names changed: {sorted(before.keys() ^ after.keys())[:5]}")
    changed = [
        key for key in before if before[key].dtype != after[key].dtype or not torch.equal(before[key], after[key])
    ]
    if changed:
        raise RuntimeError(f"{what}: {len(changed)} tensors changed, e.g. {changed[:3]}")


def refresh(source: str = DEFAULT_PIPELINE_DIR, output_dir: str = DEFAULT_PIPELINE_DIR) -> str:
    from safetensors.torch import load_file

    from pipeline_mnist_ddim.conversion.folders import model_card, save_pipeline_folder

    unet_before = load_file(os.path.join(source, "unet", "diffusion_pytorch_model.safetensors"))
    encoder_before = without_prefix(load_file(os.path.join(source, "text_encoder", "model.safetensors")))
    pipe = load_default(source)
    checkpoint, meta = checkpoint_meta(os.path.join(source, "README.md"))
    with open(MODEL_CARD_DETAILS) as f:
        details = f.read().rstrip("\n")  # as build_default_pipeline.sh passes it: "$(cat ...)"
    card = model_card(
        pipe,
        checkpoint,
        meta,
        text_encoder=os.path.join(source, "text_encoder"),
        repo=os.path.relpath(DEFAULT_PIPELINE_DIR, REPO_DIR),
        details=details,
    )
    # write and check a staging copy first: the default is replaced only by a verified folder
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(output_dir))) as staging:
        written = save_pipeline_folder(pipe, os.path.join(staging, "pipeline"), card)
        assert_same_tensors(
            unet_before, load_file(os.path.join(written, "unet", "diffusion_pytorch_model.safetensors")), "unet"
        )
        assert_same_tensors(
            encoder_before,
            without_prefix(load_file(os.path.join(written, "text_encoder", "model.safetensors"))),
            "text_encoder",
        )
        return save_pipeline_folder(pipe, output_dir, card, overwrite=True)


def main(argv=None) -> int:
    (args,) = parse_settings([RefreshOptions], argv, description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logger.info("wrote %s", refresh(args.source, args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
