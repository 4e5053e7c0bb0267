"""Convert a Lesson 5e checkpoint into a self-contained diffusers pipeline folder.

    python convert_checkpoint.py --checkpoint gaussian_diffusion_ddpm-10000.pt --output_dir mnist-ddim \
        [--text_encoder openai/clip-vit-large-patch14 | LOCAL_DIR | none] [--dtype float32|float16|bfloat16] \
        [--compact_text_encoder] [--ema] [--push_to_hub REPO_ID] [--overwrite]

The folder loads anywhere with
``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``.
"""

import argparse
import logging
import sys

import torch

from pipeline_mnist_ddim.checkpoint_to_pipeline import build_pipeline
from pipeline_mnist_ddim.cli import USER_ERRORS, report, sigterm_unwinds
from pipeline_mnist_ddim.folder_io import (
    check_hub_upload,
    check_output_dir,
    model_card,
    push_folder_to_hub,
    save_pipeline_folder,
)
from pipeline_mnist_ddim.text_encoder import LESSON_TEXT_ENCODER

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
logger = logging.getLogger("convert_checkpoint")
COMPACT_NOTE = (
    "The text encoder is compact (`--compact_text_encoder`): a table of the named encoder's "
    "`last_hidden_state` for the lesson's 20 prompts (`zero`..`nine`, `0`..`9`; case and surrounding "
    "spaces ignored), exactly what the full encoder gives them; other prompts are refused.\n\n"
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="lesson .pt, a bare state dict .pt or .safetensors")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--text_encoder", default=LESSON_TEXT_ENCODER,
                        help=f"Hub id or folder of a CLIP text model + tokenizer, or 'none' (default: {LESSON_TEXT_ENCODER})")  # fmt: skip
    parser.add_argument("--compact_text_encoder", action="store_true",
                        help="keep only the encoder's outputs for the lesson's 20 prompts (~5 MB, exact)")  # fmt: skip
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the saved weights")
    parser.add_argument("--ema", action="store_true", help="convert 'ema_state_dict' (our training script's EMA)")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="upload the folder to this Hub repo")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output_dir if it is a pipeline folder this converter wrote")  # fmt: skip
    parser.add_argument("--model_card_details", default="", help="extra Markdown for the model card")
    return parser.parse_args(argv)


def convert(args: argparse.Namespace) -> str:
    inputs = [args.checkpoint, args.text_encoder]  # never deleted by --overwrite
    check_output_dir(args.output_dir, args.overwrite, keep=inputs)  # fail before the slow part
    if args.push_to_hub:
        check_hub_upload(args.push_to_hub)
    pipe, meta = build_pipeline(args.checkpoint, args.text_encoder, DTYPES[args.dtype], use_ema=args.ema,
                                compact_text_encoder=args.compact_text_encoder)  # fmt: skip
    details = args.model_card_details
    if args.compact_text_encoder:
        details = COMPACT_NOTE + details
    card = model_card(pipe, args.checkpoint, meta, args.text_encoder, repo=args.push_to_hub or args.output_dir,
                      details=details)  # fmt: skip
    folder = save_pipeline_folder(pipe, args.output_dir, card, overwrite=args.overwrite, keep=inputs)
    logger.info("wrote %s", folder)
    if args.push_to_hub:
        logger.info("uploaded to %s", push_folder_to_hub(folder, args.push_to_hub))
    return folder


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = parse_args(argv)
    try:
        with sigterm_unwinds():  # a killed conversion removes its staging folder too
            print(convert(args))
    except USER_ERRORS as err:  # CheckpointError, TextEncoderError, OutputFolderError, a full disk, the Hub
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
