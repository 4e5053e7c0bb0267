r"""Convert a Lesson 5e checkpoint into a self-contained diffusers pipeline folder.

    mnist-ddim-convert --checkpoint gaussian_diffusion_ddpm-10000.pt --output_dir mnist-ddim \
        [--text_encoder openai/clip-vit-large-patch14 | LOCAL_DIR | none] [--dtype float32|float16|bfloat16] \
        [--compact_text_encoder] [--ema] [--push_to_hub REPO_ID] [--overwrite]

(or python convert_checkpoint.py ...). The folder loads anywhere with
``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``.
"""

import logging
import sys
from dataclasses import dataclass
from typing import Optional

from pipeline_mnist_ddim.lesson.constants import LESSON_TEXT_ENCODER
from pipeline_mnist_ddim.tools.arguments import DtypeName, option
from pipeline_mnist_ddim.tools.cli import (
    USER_ERRORS,
    parse_settings,
    print_path,
    quiet_on_ctrl_c,
    report,
    sigterm_unwinds,
)


logger = logging.getLogger("convert_checkpoint")
COMPACT_NOTE = (
    "The text encoder is compact (`--compact_text_encoder`): a table of the named encoder's "
    "`last_hidden_state` for the lesson's 20 prompts (`zero`..`nine`, `0`..`9`; case and surrounding "
    "spaces ignored), exactly what the full encoder gives them; other prompts are refused.\n\n"
)


@dataclass
class ConvertSettings:
    """A Lesson 5e checkpoint to a pipeline folder (``mnist-ddim-convert``)."""

    checkpoint: str = option(None, "lesson .pt, a bare state dict .pt or .safetensors", required=True)
    output_dir: str = option(None, "the pipeline folder to write", required=True)
    text_encoder: str = option(LESSON_TEXT_ENCODER, "Hub id or folder of a CLIP text model + tokenizer, or 'none'")
    compact_text_encoder: bool = option(
        False, "keep only the encoder's outputs for the lesson's 20 prompts (~5 MB, exact)"
    )
    dtype: DtypeName = option("float32", "dtype of the saved weights")
    ema: bool = option(False, "convert 'ema_state_dict' (our training script's EMA)")
    push_to_hub: Optional[str] = option(None, "upload the folder to this Hub repo id", metavar="REPO_ID")
    overwrite: bool = option(False, "replace --output_dir if it is a pipeline folder this converter wrote")
    model_card_details: str = option("", "extra Markdown for the model card")


def parse_args(argv=None) -> ConvertSettings:
    (settings,) = parse_settings([ConvertSettings], argv, description=__doc__)
    return settings


def convert(args: ConvertSettings) -> str:
    from pipeline_mnist_ddim.conversion.folders import (
        check_hub_upload,
        check_output_dir,
        model_card,
        push_folder_to_hub,
        save_pipeline_folder,
    )
    from pipeline_mnist_ddim.conversion.pipeline_builder import build_pipeline
    from pipeline_mnist_ddim.tools.devices import DTYPES

    inputs = [args.checkpoint, args.text_encoder]  # never deleted by --overwrite
    check_output_dir(args.output_dir, args.overwrite, keep=inputs)  # fail before the slow part
    if args.push_to_hub:
        check_hub_upload(args.push_to_hub)
    pipe, meta = build_pipeline(
        args.checkpoint,
        args.text_encoder,
        DTYPES[args.dtype],
        use_ema=args.ema,
        compact_text_encoder=args.compact_text_encoder,
    )
    details = args.model_card_details
    if args.compact_text_encoder:
        details = COMPACT_NOTE + details
    card = model_card(
        pipe, args.checkpoint, meta, args.text_encoder, repo=args.push_to_hub or args.output_dir, details=details
    )
    folder = save_pipeline_folder(pipe, args.output_dir, card, overwrite=args.overwrite, keep=inputs)
    logger.info("wrote %s", folder)
    if args.push_to_hub:
        logger.info("uploaded to %s", push_folder_to_hub(folder, args.push_to_hub))
    return folder


@quiet_on_ctrl_c
def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = parse_args(argv)
    try:
        with sigterm_unwinds():  # a killed conversion removes its staging folder too
            print_path(convert(args))
    except USER_ERRORS as err:  # CheckpointError, TextEncoderError, OutputFolderError, a full disk, the Hub
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
