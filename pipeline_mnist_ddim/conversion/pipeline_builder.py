"""A Lesson 5e checkpoint (+ a text encoder) -> an in-memory `MNISTDDIMPipeline` (folders.py saves it)."""

from typing import Optional, Tuple

import torch

from pipeline_mnist_ddim.conversion.checkpoint import read_checkpoint, unet_from_lesson_state_dict
from pipeline_mnist_ddim.conversion.text_encoders import TextEncoderError, load_text_encoder
from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline


def build_pipeline(
    checkpoint: str,
    text_encoder: Optional[str] = None,
    dtype: torch.dtype = torch.float32,
    use_ema: bool = False,
    compact_text_encoder: bool = False,
) -> Tuple[MNISTDDIMPipeline, dict]:
    """The pipeline for a lesson checkpoint, and the checkpoint's metadata (step, loss).

    ``compact_text_encoder``: replace the text encoder by the table of its outputs for the lesson's
    twenty prompts (see compact_text_encoder.py), computed in float32 before any ``dtype`` cast.
    """
    state_dict, meta = read_checkpoint(checkpoint, use_ema=use_ema)
    unet = unet_from_lesson_state_dict(state_dict)
    encoder, tokenizer = load_text_encoder(text_encoder)
    if encoder is not None and encoder.config.hidden_size != unet.config.cross_attention_dim:
        raise TextEncoderError(
            f"the text encoder's width {encoder.config.hidden_size} does not match the network's context "
            f"dimension {unet.config.cross_attention_dim}: pass the encoder the checkpoint was trained with"
        )
    if compact_text_encoder:
        if encoder is None:
            raise TextEncoderError("--compact_text_encoder needs a text encoder to compact: pass --text_encoder")
        from pipeline_mnist_ddim.conversion.prompt_table import compact_text_encoder as compact

        encoder, tokenizer = compact(encoder, tokenizer)
    pipe = MNISTDDIMPipeline(unet=unet, scheduler=lesson_ddim_scheduler(), text_encoder=encoder, tokenizer=tokenizer)
    return (pipe if dtype == torch.float32 else pipe.to(dtype=dtype)), meta
