"""A small, frozen text encoder for the twenty prompts MNIST knows.

Lesson 5e used CLIP ViT-L/14 (123M parameters) for a vocabulary of twenty words.
This builds a `CLIPTextModel` with a small config and a word-level
`PreTrainedTokenizerFast` (lowercase, whitespace split, padded to a fixed length,
unknown words map to ``[UNK]``) from standard transformers classes, deterministically
from a seed. Both save and load with ``save_pretrained``/``from_pretrained`` like any
other text encoder; the pipeline treats them exactly as it treats a real CLIP.
"""

from typing import Tuple

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from .lesson import TEXT_LABELS

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
VOCABULARY = tuple(word for pair in TEXT_LABELS for word in pair)  # zero, 0, one, 1, ...


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
