"""Replaces a text encoder by the table of its outputs for the lesson's twenty prompts (`--compact_text_encoder`)."""

from typing import Sequence, Tuple

import torch
from tokenizers import Regex, Tokenizer, models, normalizers
from transformers import PreTrainedTokenizerFast

from pipeline_mnist_ddim.compact_text_encoder import CompactTextEncoder
from pipeline_mnist_ddim.conversion.text_encoders import encode_prompts
from pipeline_mnist_ddim.lesson.constants import LESSON_PROMPTS


UNKNOWN, PADDING = "[UNK]", "[PAD]"


def build_compact_tokenizer(prompts: Sequence[str]) -> PreTrainedTokenizerFast:
    """Whole prompt -> its row number; surrounding spaces and case are ignored as CLIP ignores them."""
    vocab = {prompt: i for i, prompt in enumerate(prompts)}
    vocab.update({UNKNOWN: len(prompts), PADDING: len(prompts) + 1})
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNKNOWN))
    # No pre-tokenizer: the whole normalised prompt is one word, so "seven seven" is unknown,
    # not two sevens.
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(), normalizers.Lowercase()]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=1, unk_token=UNKNOWN, pad_token=PADDING
    )


@torch.no_grad()
def compact_text_encoder(
    text_encoder, tokenizer, prompts: Sequence[str] = LESSON_PROMPTS
) -> Tuple[CompactTextEncoder, PreTrainedTokenizerFast]:
    """Runs ``text_encoder`` once over ``prompts`` as the lesson (and the pipeline) encode them.

    The table is float32 (what a float32 encoder returns), so contexts and images are exactly
    those of the full encoder.
    """
    contexts = encode_prompts(text_encoder, tokenizer, prompts).float().cpu()
    compact = CompactTextEncoder(list(prompts), sequence_length=contexts.shape[1], hidden_size=contexts.shape[2])
    compact.last_hidden_states.copy_(contexts)
    return compact.eval(), build_compact_tokenizer(prompts)
