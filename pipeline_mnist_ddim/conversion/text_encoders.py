"""Text encoders: a small, frozen one for the twenty prompts MNIST knows, and loading any CLIP text encoder.

Lesson 5e used CLIP ViT-L/14 (123M parameters) for a vocabulary of twenty words.
This builds a `CLIPTextModel` with a small config and a word-level
`PreTrainedTokenizerFast` (lowercase, whitespace split, padded to a fixed length,
unknown words map to ``[UNK]``) from standard transformers classes, deterministically
from a seed. Both save and load with ``save_pretrained``/``from_pretrained`` like any
other text encoder; the pipeline treats them exactly as it treats a real CLIP.

``load_text_encoder`` loads any CLIP text encoder (a Hub id or a folder) for the converter and
the training script alike, refusing what would run with missing, random or non-finite weights.
"""

import os
from typing import Optional, Tuple

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from pipeline_mnist_ddim.conversion.errors import headline
from pipeline_mnist_ddim.conversion.files import is_hub_id
from pipeline_mnist_ddim.lesson.constants import LESSON_PROMPTS, LESSON_TEXT_ENCODER


CLIP_MODEL_TYPES = ("clip_text_model", "clip")  # a text model alone, or a whole CLIP model


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
VOCABULARY = LESSON_PROMPTS  # the small encoder knows the lesson's twenty prompts


def build_tokenizer(max_length: int = 8) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + VOCABULARY)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Strip(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=max_length,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )


def build_text_encoder(
    hidden_size: int = 128, num_layers: int = 2, max_length: int = 8, seed: int = 0
) -> Tuple[CLIPTextModel, PreTrainedTokenizerFast]:
    """A randomly initialised (seeded), frozen CLIP text model and its tokenizer."""
    tokenizer = build_tokenizer(max_length)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 32),
        max_position_embeddings=max_length,
        projection_dim=hidden_size,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(config)
    text_encoder.requires_grad_(False).eval()
    return text_encoder, tokenizer


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
    from transformers import AutoConfig, AutoTokenizer

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
            raise TextEncoderError(f"could not load the text encoder in {source}: {headline(err)}") from err
        raise TextEncoderError(
            f"could not load the text encoder {source!r}: {headline(err)}. "
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

            hint = (
                f"; it lacks {len(info['missing_keys'])} of its weights under transformers {transformers.__version__}: "
                "was it saved by another major version? Load and re-save it with this one"
            )
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
    if not is_hub_id(source):
        raise TextEncoderError(
            f"no text encoder folder at {source} (pass a folder, a Hub id such as {LESSON_TEXT_ENCODER}, or none)"
        )


@torch.no_grad()
def encode_prompts(text_encoder, tokenizer, prompts) -> torch.Tensor:
    """The lesson's context: last_hidden_state of prompts padded to max length, no attention mask."""
    ids = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(input_ids=ids.to(device)).last_hidden_state
