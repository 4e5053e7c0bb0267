"""What `MNISTDDIMPipeline` accepts: its scheduler and every call argument, checked before any work, and the
message for a result that came out NaN or infinite.

Hub remote code beside ``pipeline_mnist_ddim.py``, which imports it relatively (diffusers copies such files
along), so it imports only torch and diffusers.
"""

import math
import numbers
from typing import List

import torch
from diffusers import SchedulerMixin


class PipelineChecksMixin:
    """The checks of `MNISTDDIMPipeline`: a ValueError that names the argument and what is accepted."""

    @staticmethod
    def check_scheduler(scheduler: SchedulerMixin) -> None:
        """Rejects scheduler settings that cannot reproduce the lesson (never rewrites them)."""
        config = scheduler.config
        wrong = {
            key: config[key]
            for key, ok in (
                ("prediction_type", "epsilon"),
                ("clip_sample", False),
                ("thresholding", False),
                ("num_train_timesteps", 1000),
            )
            if key in config and config[key] != ok
        }
        if wrong:
            raise ValueError(
                f"scheduler settings {wrong} do not match the Lesson 5e model, which predicts epsilon over "
                "1000 steps and was trained without clipping: use prediction_type='epsilon', "
                "clip_sample=False, thresholding=False, num_train_timesteps=1000"
            )

    def check_inputs(
        self,
        prompt,
        num_inference_steps,
        negative_prompt=None,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        callback_on_step_end_tensor_inputs=None,
        batch_size=None,
        num_images_per_prompt=1,
        eta=0.0,
        guidance_scale=1.0,
        latents=None,
        generator=None,
        cross_attention_kwargs=None,
    ):
        if self.scheduler is None:
            raise ValueError(
                "this pipeline has no `scheduler`: pass one to the constructor, or assign `pipe.scheduler`"
            )
        # A scheduler may have been assigned after construction: check the one in use.
        self.check_scheduler(self.scheduler)
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("pass either `prompt` or `prompt_embeds`, not both")
        if prompt is not None:
            prompts = self._as_prompt_list(prompt, "prompt")
            if self.text_encoder is None or self.tokenizer is None:
                raise ValueError(
                    "this pipeline has no text encoder (it was converted with `--text_encoder none`), so it samples "
                    "unconditionally only: call it with prompt=None, or convert again with a text encoder"
                )
        for name, value in (("batch_size", batch_size), ("num_images_per_prompt", num_images_per_prompt)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer, not {value!r}")
        if num_images_per_prompt is None:
            raise ValueError("`num_images_per_prompt` must be a positive integer, not None")
        max_steps = self.scheduler.config.num_train_timesteps
        if (
            not isinstance(num_inference_steps, int)
            or isinstance(num_inference_steps, bool)  # True is an int to Python, not a step count
            or not 1 <= num_inference_steps <= max_steps
        ):
            raise ValueError(
                f"`num_inference_steps` must be an integer from 1 to {max_steps}, not {num_inference_steps!r}"
            )
        if not self._is_real(eta) or not 0 <= eta <= 1:
            raise ValueError(
                f"`eta` must be a number from 0 to 1 (0 is deterministic DDIM, 1 has DDPM's variance), not {eta!r}: "
                "above 1, DDIM's sigma_t exceeds sqrt(1 - alpha_prev) and the update's direction term "
                "sqrt(1 - alpha_prev - sigma_t^2) is undefined"
            )
        if not self._is_real(guidance_scale) or guidance_scale < 0:
            raise ValueError(
                f"`guidance_scale` must be a finite number >= 0 (<= 1 disables guidance, as in Stable Diffusion), "
                f"not {guidance_scale!r}"
            )
        conditional = prompt is not None or prompt_embeds is not None
        if guidance_scale > 1 and not conditional:
            raise ValueError("`guidance_scale` > 1 needs a prompt: guidance pushes away from the unconditional output")
        if (negative_prompt is not None or negative_prompt_embeds is not None) and not conditional:
            raise ValueError("`negative_prompt` and `negative_prompt_embeds` need a `prompt` or `prompt_embeds`")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("pass either `negative_prompt` or `negative_prompt_embeds`, not both")
        if negative_prompt is not None:
            negatives = self._as_prompt_list(negative_prompt, "negative_prompt")
            if prompt is not None and not isinstance(negative_prompt, str) and len(negatives) != len(prompts):
                raise ValueError(
                    f"got {len(negatives)} negative prompts for {len(prompts)} prompts: pass one, or one per prompt"
                )
        for name, tensor in (
            ("latents", latents),
            ("prompt_embeds", prompt_embeds),
            ("negative_prompt_embeds", negative_prompt_embeds),
        ):
            if tensor is not None and not isinstance(tensor, torch.Tensor):
                raise ValueError(f"`{name}` must be a torch.Tensor, not {type(tensor).__name__}")
            if tensor is not None and not torch.isfinite(tensor).all():
                raise ValueError(f"`{name}` holds NaN or infinite values: pass finite numbers")
        if prompt_embeds is not None and prompt_embeds.ndim != 3:
            raise ValueError(
                f"`prompt_embeds` must have shape (batch, tokens, width), not {tuple(prompt_embeds.shape)}"
            )
        width = self.unet.config.cross_attention_dim if self.unet is not None else None
        if prompt_embeds is not None and width is not None and prompt_embeds.shape[-1] != width:
            raise ValueError(
                f"`prompt_embeds` must be {width} wide (the UNet's cross_attention_dim), "
                f"not {prompt_embeds.shape[-1]}: shape (batch, tokens, {width})"
            )
        if negative_prompt_embeds is not None and (
            prompt_embeds is None or negative_prompt_embeds.shape != prompt_embeds.shape
        ):
            raise ValueError("`negative_prompt_embeds` must come with `prompt_embeds` of the same shape")
        if batch_size is not None and conditional:
            num_prompts = len(prompts) if prompt is not None else prompt_embeds.shape[0]
            if batch_size != num_prompts:
                raise ValueError(
                    f"`batch_size` ({batch_size}) counts prompts when a prompt is given, and there are {num_prompts}: "
                    "leave it out and use `num_images_per_prompt` for more images of each prompt"
                )
        if not (
            generator is None
            or isinstance(generator, torch.Generator)
            or (isinstance(generator, list) and generator and all(isinstance(g, torch.Generator) for g in generator))
        ):
            raise ValueError(
                f"`generator` must be a torch.Generator or a list of them (one per image), not {generator!r}"
            )
        if isinstance(generator, list) and latents is not None:
            raise ValueError("pass either `latents` or a list of generators, not both")
        if cross_attention_kwargs is not None:
            if not isinstance(cross_attention_kwargs, dict):
                raise ValueError(
                    f"`cross_attention_kwargs` must be a dict, not {type(cross_attention_kwargs).__name__}"
                )
            if "scale" in cross_attention_kwargs and not self._is_real(cross_attention_kwargs["scale"]):
                raise ValueError(
                    "`cross_attention_kwargs['scale']` (the LoRA scale) must be a finite number, "
                    f"not {cross_attention_kwargs['scale']!r}"
                )
        if callback_on_step_end_tensor_inputs is not None and not all(
            k in self._callback_tensor_inputs for k in callback_on_step_end_tensor_inputs
        ):
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be a subset of {self._callback_tensor_inputs}"
            )

    def _non_finite_message(self, what: str, suspects: List[str]) -> str:
        if suspects:
            named = ", ".join(f"`{name}`" for name in suspects)
            return (
                f"{what} hold NaN or infinite values: {named} drove the float32 arithmetic out of range; "
                "pass values of ordinary size (a guidance scale of at most tens, latents and embeddings of order 1)"
            )
        return (
            f"{what} hold NaN or infinite values although every input was finite and ordinary: "
            f"the model's weights or its dtype ({self.unet.dtype}) cannot represent this computation"
        )

    @staticmethod
    def _is_real(value) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

    @staticmethod
    def _as_prompt_list(prompt, name: str) -> List[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"`{name}` must be a string or a list of strings, not {type(prompt).__name__}")
        if not prompts:
            raise ValueError(f"`{name}` is an empty list: pass at least one prompt, or None to sample unconditionally")
        if any(not p.strip() for p in prompts):
            raise ValueError(f"`{name}` holds an empty string: pass a digit such as 'seven' or '7'")
        return prompts
