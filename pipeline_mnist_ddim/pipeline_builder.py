"""A Lesson 5e checkpoint (+ a text encoder) -> an in-memory `MNistDDIMPipeline`."""

import os
from typing import Optional, Tuple

import torch

from .conversion import read_checkpoint, unet_from_lesson_state_dict
from .pipeline_mnist_ddim import MNistDDIMPipeline
from .schedulers import lesson_ddim_scheduler

LESSON_TEXT_ENCODER = "openai/clip-vit-large-patch14"
CLIP_MODEL_TYPES = ("clip_text_model", "clip")  # a text model alone, or a whole CLIP model


class TextEncoderError(ValueError):
    """The text encoder could not be loaded or does not fit the network."""


def load_text_encoder(source: Optional[str]) -> Tuple[Optional[object], Optional[object]]:
    """(text_encoder, tokenizer) from a Hub id or a local folder; ``None``/"none" gives (None, None).

    A folder may hold both (as the training script writes it) or ``text_encoder/`` and
    ``tokenizer/`` subfolders (as a pipeline folder does).
    """
    if source is None or source.lower() == "none":
        return None, None
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoTokenizer, CLIPTextModel

    check_text_encoder_source(source)
    model_dir = tokenizer_dir = source
    if os.path.isdir(os.path.join(source, "text_encoder")) and os.path.isdir(os.path.join(source, "tokenizer")):
        model_dir, tokenizer_dir = os.path.join(source, "text_encoder"), os.path.join(source, "tokenizer")
    try:
        model_type = AutoConfig.from_pretrained(model_dir).model_type
        if model_type in CLIP_MODEL_TYPES:
            text_encoder, info = CLIPTextModel.from_pretrained(model_dir, output_loading_info=True)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:  # missing, offline, corrupt
        if os.path.isdir(source):
            raise TextEncoderError(f"could not load the text encoder in {source}: {_first_line(err)}") from err
        raise TextEncoderError(
            f"could not load the text encoder {source!r}: {_first_line(err)}. "
            f"Offline? Download it once where the Hub is reachable (`hf download {LESSON_TEXT_ENCODER}`), "
            "pass a local folder holding a CLIP text model and its tokenizer, or pass `none` for an "
            "unconditional-only pipeline."
        ) from err
    if model_type not in CLIP_MODEL_TYPES:  # CLIPTextModel would load it with random weights, silently
        raise TextEncoderError(f"{source} holds a {model_type!r} model, not a CLIP text model")
    # A whole CLIP model (the lesson's openai/clip-vit-large-patch14) also holds its vision tower: unused here.
    unexpected = sorted(info["unexpected_keys"]) if model_type == "clip_text_model" else []
    if info["missing_keys"] or unexpected or info["mismatched_keys"]:
        found = {"missing": info["missing_keys"], "unexpected": unexpected, "mismatched": info["mismatched_keys"]}
        problems = {kind: sorted(map(str, keys))[:5] for kind, keys in found.items() if keys}
        hint = ""
        if info["missing_keys"]:  # e.g. a folder saved by another major version of transformers
            import transformers

            hint = (f"; it lacks {len(info['missing_keys'])} of its weights under transformers {transformers.__version__}: "
                    "was it saved by another major version? Load and re-save it with this one")
        raise TextEncoderError(f"{source} does not hold a complete CLIP text model's weights: {problems}{hint}")
    not_finite = [name for name, p in text_encoder.named_parameters() if not torch.isfinite(p).all()]
    if not_finite:
        raise TextEncoderError(f"{source} holds NaN or infinite weights in {not_finite[:5]}")
    return text_encoder.requires_grad_(False).eval(), tokenizer


def check_text_encoder_source(source: str) -> None:
    """A path that is not a folder is reported as a missing folder, not as a malformed Hub id."""
    if os.path.isdir(source):
        return
    if os.path.exists(source):
        raise TextEncoderError(f"{source} is a file: pass the folder holding the text encoder and its tokenizer")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    looks_local = os.path.isabs(source) or source.startswith(".") or source.count("/") > 1 or "\\" in source
    try:
        validate_repo_id(source)
    except HFValidationError:
        looks_local = True
    if looks_local:
        raise TextEncoderError(
            f"no text encoder folder at {source} (pass a folder, a Hub id such as {LESSON_TEXT_ENCODER}, or none)"
        )


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(err).__name__


def build_pipeline(
    checkpoint: str, text_encoder: Optional[str] = None, dtype: torch.dtype = torch.float32, use_ema: bool = False,
    compact_text_encoder: bool = False,
) -> Tuple[MNistDDIMPipeline, dict]:
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
        from .compaction import compact_text_encoder as compact

        encoder, tokenizer = compact(encoder, tokenizer)
    pipe = MNistDDIMPipeline(unet=unet, scheduler=lesson_ddim_scheduler(), text_encoder=encoder, tokenizer=tokenizer)
    return (pipe if dtype == torch.float32 else pipe.to(dtype=dtype)), meta
