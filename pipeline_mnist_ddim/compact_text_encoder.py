"""A text encoder that is a prompt table: the lesson's prompts and the contexts a real encoder gave them.

This file is loaded as Hub remote code (``text_encoder/compact_text_encoder.py`` in a
pipeline folder), so it imports only torch, diffusers and transformers.

A Lesson 5e model saw twenty prompts ("zero".."nine", "0".."9"); for each of them CLIP
ViT-L/14's (77, 768) ``last_hidden_state`` is one fixed tensor. `CompactTextEncoder` stores
those tensors (4.7 MB in float32 instead of CLIP's 492 MB) and returns them exactly. Its
tokenizer (a stock `PreTrainedTokenizerFast`) maps a whole prompt, lowercased and stripped
as CLIP's tokenizer would treat it, to the prompt's row number; anything else becomes the
unknown token, which the pipeline and this encoder refuse with the list of accepted prompts.
"""

from typing import List

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from transformers.modeling_outputs import BaseModelOutput


class CompactTextEncoder(ModelMixin, ConfigMixin):
    r"""Row ``i`` of the prompt table is the context of ``prompts[i]``; input ids are row numbers, one per prompt.

    (mnist-ddim-convert --compact_text_encoder builds it; the training script conditions on the same table.)

    Args:
        prompts (`List[str]`): The accepted prompts, in table order.
        sequence_length (`int`, *optional*, defaults to 77): Tokens per context (CLIP's padded length).
        hidden_size (`int`, *optional*, defaults to 768): Width of the context.
    """

    @register_to_config
    def __init__(self, prompts: List[str], sequence_length: int = 77, hidden_size: int = 768):
        super().__init__()
        self.register_buffer("last_hidden_states", torch.zeros(len(prompts), sequence_length, hidden_size))

    def forward(self, input_ids: torch.Tensor, return_dict: bool = True, **kwargs):
        """``input_ids`` (B, 1) row numbers -> ``last_hidden_state`` (B, sequence_length, hidden_size)."""
        prompts = self.config.prompts
        rows = input_ids.to(self.last_hidden_states.device)
        if rows.dim() != 2 or rows.shape[1] != 1 or not ((rows >= 0) & (rows < len(prompts))).all():
            raise ValueError(
                f"this compact text encoder knows only the prompts {list(prompts)} (as ids 0..{len(prompts) - 1} "
                f"from its own tokenizer), not input_ids {input_ids.tolist()}: the model never saw other text"
            )
        hidden = self.last_hidden_states[rows[:, 0]]
        return BaseModelOutput(last_hidden_state=hidden) if return_dict else (hidden,)
