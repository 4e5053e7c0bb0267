"""A Lesson 5e checkpoint (+ a text encoder) -> an in-memory `MNistDDIMPipeline`."""

import os
from typing import Optional, Tuple

import torch

from .conversion import read_checkpoint, unet_from_lesson_state_dict
from .pipeline_mnist_ddim import MNistDDIMPipeline
from .schedulers import lesson_ddim_scheduler

LESSON_TEXT_ENCODER = "openai/clip-vit-large-patch14"


class TextEncoderError(ValueError):
    """The text encoder could not be loaded or does not fit the network."""


def load_text_encoder(source: Optional[str]) -> Tuple[Optional[object], Optional[object]]:
    """(text_encoder, tokenizer) from a Hub id or a local folder; ``None``/"none" gives (None, None).

    A folder may hold both (as the training script writes it) or ``text_encoder/`` and
    ``tokenizer/`` subfolders (as a pipeline folder does).
    """
    if source is None or source.lower() == "none":
        return None, None
    from transformers import AutoTokenizer, CLIPTextModel

    model_dir = tokenizer_dir = source
    if os.path.isdir(os.path.join(source, "text_encoder")) and os.path.isdir(os.path.join(source, "tokenizer")):
        model_dir, tokenizer_dir = os.path.join(source, "text_encoder"), os.path.join(source, "tokenizer")
    try:
        text_encoder, loading_info = CLIPTextModel.from_pretrained(model_dir, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError) as err:
        raise TextEncoderError(
            f"could not load the text encoder {source!r}: {err}\n"
            f"Offline? Download it once where the Hub is reachable (`hf download {LESSON_TEXT_ENCODER}`), "
            "pass a local folder holding a CLIP text model and its tokenizer, or pass `none` for an "
            "unconditional-only pipeline."
        ) from err
    missing = sorted(loading_info["missing_keys"])
    if missing:  # transformers only warns, and the encoder would be randomly initialised
        import transformers

        raise TextEncoderError(
            f"the text encoder {source!r} lacks {len(missing)} of its weights (e.g. {missing[0]!r}) under "
            f"transformers {transformers.__version__}: was it saved by another major version? Load and "
            "re-save it with this one, or convert with the version that saved it."
        )
    return text_encoder.requires_grad_(False).eval(), tokenizer


def build_pipeline(
    checkpoint: str, text_encoder: Optional[str] = None, dtype: torch.dtype = torch.float32, use_ema: bool = False
) -> Tuple[MNistDDIMPipeline, dict]:
    """The pipeline for a lesson checkpoint, and the checkpoint's metadata (step, loss)."""
    state_dict, meta = read_checkpoint(checkpoint, use_ema=use_ema)
    unet = unet_from_lesson_state_dict(state_dict)
    encoder, tokenizer = load_text_encoder(text_encoder)
    if encoder is not None and encoder.config.hidden_size != unet.config.cross_attention_dim:
        raise TextEncoderError(
            f"the text encoder's width {encoder.config.hidden_size} does not match the network's context "
            f"dimension {unet.config.cross_attention_dim}: pass the encoder the checkpoint was trained with"
        )
    pipe = MNistDDIMPipeline(unet=unet, scheduler=lesson_ddim_scheduler(), text_encoder=encoder, tokenizer=tokenizer)
    return (pipe if dtype == torch.float32 else pipe.to(dtype=dtype)), meta
