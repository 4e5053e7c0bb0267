"""Prompts to the network's context, as Stable Diffusion's `encode_prompt` makes it (with LoRA scales).

Hub remote code beside ``pipeline_mnist_ddim.py``, which imports it relatively (diffusers copies such files
along), so it imports only torch and diffusers.
"""

from typing import List, Optional, Union

import torch
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils import USE_PEFT_BACKEND, scale_lora_layers, unscale_lora_layers


class PipelinePromptsMixin:
    """`encode_prompt` of `MNISTDDIMPipeline`: the lesson's context from its `tokenizer` and `text_encoder`."""

    def accepted_words(self) -> Optional[List[str]]:
        """The prompt words the tokenizer knows, when its vocabulary is small enough to list."""
        if self.tokenizer is None or len(self.tokenizer) > 1000:
            return None
        specials = set(self.tokenizer.all_special_tokens)
        return sorted((w for w in self.tokenizer.get_vocab() if w not in specials), key=lambda w: (not w.isdigit(), w))

    def _encode_text(self, prompt: Union[str, List[str]], device: torch.device) -> torch.Tensor:
        """The lesson's context: ``last_hidden_state`` of prompts padded to max length, no attention mask."""
        prompts = [p.strip().lower() for p in ([prompt] if isinstance(prompt, str) else prompt)]
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        # A word-level tokenizer maps unknown words to [UNK]: the model never saw them, so refuse
        # rather than sample noise. (CLIP's unk token is its end token: nothing to detect there.)
        unk = self.tokenizer.unk_token_id
        if unk is not None and unk not in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            unknown = [p for p, row in zip(prompts, ids) if (row == unk).any()]
            if unknown:
                words = self.accepted_words()
                raise ValueError(f"unknown words in prompts {unknown}; this model knows {words}")
        return self.text_encoder(ids.to(device)).last_hidden_state

    def encode_prompt(
        self,
        prompt: Optional[Union[str, List[str]]],
        device: torch.device,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = False,
        negative_prompt: Optional[Union[str, List[str]]] = None,
        prompt_embeds: Optional[torch.Tensor] = None,
        negative_prompt_embeds: Optional[torch.Tensor] = None,
        lora_scale: Optional[float] = None,
    ):
        r"""
        Encodes the prompt into the network's context, as Stable Diffusion's `encode_prompt`.

        Args:
            prompt (`str` or `List[str]`, *optional*): prompts to encode (or pass `prompt_embeds`).
            device (`torch.device`): where the embeddings go.
            num_images_per_prompt (`int`, defaults to 1): copies of each prompt's embedding, kept adjacent.
            do_classifier_free_guidance (`bool`, defaults to `False`): also return the negative context.
            negative_prompt (`str` or `List[str]`, *optional*): what guidance steers away from; without it
                (and without `negative_prompt_embeds`) the lesson's zero context, the one it was trained to drop to.
            prompt_embeds (`torch.Tensor`, *optional*): precomputed contexts (B, tokens, width).
            negative_prompt_embeds (`torch.Tensor`, *optional*): precomputed negative contexts, shaped as
                `prompt_embeds`.
            lora_scale (`float`, *optional*): the scale of the text encoder's LoRA layers while encoding (as
                Stable Diffusion, which takes it from `cross_attention_kwargs["scale"]`).

        Returns:
            `(prompt_embeds, negative_prompt_embeds)`: the second is `None` without guidance.
        """
        if lora_scale is not None and isinstance(self, StableDiffusionLoraLoaderMixin):
            self._lora_scale = lora_scale
        # As Stable Diffusion, with the scale undone also when encoding raises (an unknown word, say).
        scaled = lora_scale is not None and self.text_encoder is not None and USE_PEFT_BACKEND
        if scaled:
            scale_lora_layers(self.text_encoder, lora_scale)
        try:
            if prompt_embeds is None:
                prompt_embeds = self._encode_text(prompt, device)
            num_prompts = prompt_embeds.shape[0]
            if do_classifier_free_guidance and negative_prompt_embeds is None and negative_prompt is not None:
                negatives = [negative_prompt] * num_prompts if isinstance(negative_prompt, str) else negative_prompt
                negative_prompt_embeds = self._encode_text(negatives, device)
        finally:
            if scaled:
                unscale_lora_layers(self.text_encoder, lora_scale)
        dtype = self.unet.dtype if self.unet is not None else prompt_embeds.dtype
        prompt_embeds = prompt_embeds.to(device=device, dtype=dtype).repeat_interleave(num_images_per_prompt, dim=0)
        if not do_classifier_free_guidance:
            return prompt_embeds, None
        if negative_prompt_embeds is None:
            return prompt_embeds, torch.zeros_like(prompt_embeds)
        negative_prompt_embeds = negative_prompt_embeds.to(device=device, dtype=dtype)
        return prompt_embeds, negative_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
