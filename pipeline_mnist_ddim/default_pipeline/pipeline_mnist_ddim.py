"""Lesson 6 of mindiffusion as a diffusers pipeline: DDIM sampling of the Lesson 5e MNIST model.

This file is loaded as Hub remote code (the pipeline folder's root), so it imports only torch,
diffusers and transformers, and its siblings relatively (diffusers copies them along): the input
checks, the prompt encoding, DDIM inversion and the folder behaviour. It never imports the UNet
subclass (diffusers loads that from ``unet/``; re-importing it here would create a second class
of the same name).
"""

import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, SchedulerMixin, UNet2DConditionModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils import logging, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor

from .pipeline_checks import PipelineChecksMixin
from .pipeline_folder import PipelineFolderMixin
from .pipeline_inversion import PipelineInversionMixin
from .pipeline_prompts import PipelinePromptsMixin


logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import DiffusionPipeline

        >>> from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR  # or a converted folder, or a Hub id

        >>> pipe = DiffusionPipeline.from_pretrained(DEFAULT_PIPELINE_DIR, trust_remote_code=True)
        >>> generator = torch.Generator().manual_seed(42)
        >>> sevens = pipe(prompt="seven", num_images_per_prompt=4, generator=generator).images
        >>> sevens_unlike_ones = pipe(prompt="7", negative_prompt="1", guidance_scale=2.0).images
        >>> anything = pipe(batch_size=4, num_inference_steps=50, eta=0.0).images
        ```
"""


class MNISTDDIMPipeline(
    PipelineFolderMixin,
    PipelineChecksMixin,
    PipelinePromptsMixin,
    PipelineInversionMixin,
    DiffusionPipeline,
    StableDiffusionLoraLoaderMixin,
):
    r"""
    Text-conditional MNIST sampling with DDIM (Lesson 6) from a Lesson 5e network.

    Inherits the loading, saving, offloading and attention methods of [`DiffusionPipeline`], and
    [`~loaders.StableDiffusionLoraLoaderMixin.load_lora_weights`] (with `fuse_lora`, `set_adapters`,
    `unload_lora_weights`) for LoRA adapters of the UNet and text encoder. Its parts live beside this
    file: `check_inputs` and `check_scheduler` (`pipeline_checks.py`), `encode_prompt`
    (`pipeline_prompts.py`), `invert` (`pipeline_inversion.py`) and saving (`pipeline_folder.py`).

    Parameters:
        unet ([`UNet2DConditionModel`]):
            The Lesson 5e network (a `MNISTUNet2DConditionModel`, loaded from the folder's `unet/`).
        scheduler ([`SchedulerMixin`]):
            A `DDIMScheduler` configured as Lesson 6 (see the README); any diffusers scheduler with
            the lesson's betas and epsilon prediction may be swapped in with `from_config`.
        text_encoder ([`~transformers.PreTrainedModel`], *optional*):
            A text model whose `last_hidden_state` is the context (CLIP ViT-L/14 for the lesson's
            checkpoints). Without it the pipeline samples unconditionally only.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The text encoder's tokenizer; prompts are padded to its `model_max_length`.
    """

    model_cpu_offload_seq = "text_encoder->unet"
    _optional_components = ["text_encoder", "tokenizer"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        text_encoder: Optional[Any] = None,
        tokenizer: Optional[Any] = None,
    ):
        super().__init__()
        # None is allowed, as in Stable Diffusion (e.g. to encode prompts only); `check_inputs` refuses to sample then.
        if scheduler is not None:
            self.check_scheduler(scheduler)
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)

    # ------------------------------------------------------------------ conventions of stock pipelines

    @property
    def guidance_scale(self):
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self):
        return self._guidance_scale > 1

    @property
    def cross_attention_kwargs(self):
        return self._cross_attention_kwargs

    @property
    def num_timesteps(self):
        return self._num_timesteps

    @property
    def interrupt(self):
        return self._interrupt

    def prepare_latents(self, batch_size, dtype, device, generator, latents=None):
        config = self.unet.config
        shape = (batch_size, config.in_channels, config.sample_size, config.sample_size)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for {batch_size} images: pass one per image")
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` must have shape {shape}, not {tuple(latents.shape)}")
        else:
            latents = latents.to(device=device, dtype=dtype)
        # The scheduler's starting noise level: 1 for DDIM (so the lesson's x_T), ~sigma_max for Euler and Heun.
        return latents * self.scheduler.init_noise_sigma

    @property
    def _latents_dtype(self) -> torch.dtype:
        # float32 at least (a float64 UNet keeps float64, to measure the sampler's exactness)
        return torch.promote_types(self.unet.dtype, torch.float32)

    # Copied from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion.StableDiffusionPipeline.prepare_extra_step_kwargs
    def prepare_extra_step_kwargs(self, generator, eta):
        # prepare extra kwargs for the scheduler step, since not all schedulers have the same signature
        # eta (η) is only used with the DDIMScheduler, it will be ignored for other schedulers.
        # eta corresponds to η in DDIM paper: https://huggingface.co/papers/2010.02502
        # and should be between [0, 1]

        accepts_eta = "eta" in set(inspect.signature(self.scheduler.step).parameters.keys())
        extra_step_kwargs = {}
        if accepts_eta:
            extra_step_kwargs["eta"] = eta

        # check if the scheduler accepts generator
        accepts_generator = "generator" in set(inspect.signature(self.scheduler.step).parameters.keys())
        if accepts_generator:
            extra_step_kwargs["generator"] = generator
        return extra_step_kwargs

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: Optional[Union[str, List[str]]] = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        negative_prompt: Optional[Union[str, List[str]]] = None,
        num_images_per_prompt: int = 1,
        batch_size: Optional[int] = None,
        eta: float = 0.0,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        prompt_embeds: Optional[torch.Tensor] = None,
        negative_prompt_embeds: Optional[torch.Tensor] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: Optional[Dict[str, Any]] = None,
        callback_on_step_end: Optional[
            Union[Callable[[Any, int, int, Dict], Dict], PipelineCallback, MultiPipelineCallbacks]
        ] = None,
        callback_on_step_end_tensor_inputs: Optional[List[str]] = None,
    ) -> Union[ImagePipelineOutput, Tuple]:
        r"""
        Samples digits with DDIM (Lesson 6: equation 12 of the DDIM paper, no clipping).

        Args:
            prompt (`str` or `List[str]`, *optional*, defaults to `None`):
                Digits to draw, as words or numerals ("seven", "7"); lowercased and stripped. `None`
                samples unconditionally with the lesson's zero context.
            num_inference_steps (`int`, *optional*, defaults to 50):
                DDIM steps S, at the stride 1000 // S from 0 and walked backwards: for S dividing 1000
                exactly Lesson 6's `range(0, 1000, 1000 // S)`; otherwise that range has a few more entries.
            guidance_scale (`float`, *optional*, defaults to 1.0):
                Classifier-free guidance weight w: eps = eps(negative) + w * (eps(prompt) - eps(negative)).
                Values <= 1 disable guidance (1 is the lesson's plain conditional sampling), as in Stable Diffusion.
            negative_prompt (`str` or `List[str]`, *optional*):
                What guidance steers away from (one, or one per prompt); used only when `guidance_scale` > 1.
                Without it, guidance is against the lesson's zero context.
            num_images_per_prompt (`int`, *optional*, defaults to 1):
                Images per prompt (per `prompt_embeds` row); unconditionally, images per `batch_size`.
            batch_size (`int`, *optional*):
                Without a prompt: the number of images (times `num_images_per_prompt`), default 1.
                With a prompt it counts prompts (Stable Diffusion has no such argument): it may be left out, and is
                refused unless it equals the number of prompts (use `num_images_per_prompt` for more).
            eta (`float`, *optional*, defaults to 0.0):
                DDIM's eta, from 0 to 1: 0 is deterministic (the lesson), 1 has DDPM's posterior variance.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
                Seeds the latents (and eta > 0 noise). A list gives each image its own generator, so
                an image depends on its seed only, not on the batch size.
            latents (`torch.Tensor`, *optional*):
                x_T of shape (images, in_channels, 32, 32); the same latents always give the same images.
                Scaled by the scheduler's `init_noise_sigma` (1 for DDIM).
            prompt_embeds (`torch.Tensor`, *optional*):
                Precomputed contexts (B, tokens, cross_attention_dim), e.g. interpolated prompts.
            negative_prompt_embeds (`torch.Tensor`, *optional*):
                Precomputed negative contexts, shaped as `prompt_embeds`.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` (N, H, W, C) or `"pt"` (N, C, H, W) with values in [0, 1]; or `"latent"`:
                the final x_0 as the scheduler left it, (N, C, H, W) in about [-1, 1], unclamped.
            return_dict (`bool`, *optional*, defaults to `True`):
                Return an [`~pipelines.ImagePipelineOutput`] rather than a tuple.
            cross_attention_kwargs (`dict`, *optional*):
                Passed to the UNet's attention processors, as in Stable Diffusion; its `"scale"` is the LoRA scale
                of this call (UNet and text encoder) when LoRA adapters are loaded.
            callback_on_step_end (`Callable`, *optional*):
                Called as `callback_on_step_end(self, step, timestep, callback_kwargs)` after each step;
                tensors it returns replace the pipeline's (diffusers' `SDCFGCutoffCallback` works).
            callback_on_step_end_tensor_inputs (`List[str]`, *optional*):
                Tensors passed in `callback_kwargs`, among `latents`, `prompt_embeds` and `negative_prompt_embeds`.

        Examples:

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the images.
        """
        # 1. Check inputs
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        self.check_inputs(
            prompt=prompt,
            num_inference_steps=num_inference_steps,
            negative_prompt=negative_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            batch_size=batch_size,
            num_images_per_prompt=num_images_per_prompt,
            eta=eta,
            guidance_scale=guidance_scale,
            latents=latents,
            generator=generator,
            cross_attention_kwargs=cross_attention_kwargs,
        )
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be 'pil', 'np', 'pt' or 'latent', not {output_type!r}")
        self._guidance_scale = guidance_scale
        self._cross_attention_kwargs = cross_attention_kwargs
        self._interrupt = False
        device = self._execution_device
        # What the caller chose that can overflow the float32 arithmetic, named if the result is not finite.
        suspects = [
            name for name, value in (("latents", latents), ("prompt_embeds", prompt_embeds)) if value is not None
        ]
        suspects += ["negative_prompt_embeds"] if negative_prompt_embeds is not None else []
        suspects += ["guidance_scale"] if guidance_scale > 1 else []
        suspects += ["cross_attention_kwargs"] if cross_attention_kwargs else []

        # 2. Encode the prompt. Unconditionally the context is the lesson's zeros, which the network's
        #    bias-free key/value projections turn into the same output at any token count.
        if prompt is None and prompt_embeds is None:
            num_images = (batch_size or 1) * num_images_per_prompt
            width = self.unet.config.cross_attention_dim
            prompt_embeds = torch.zeros(num_images, 1, width, device=device, dtype=self.unet.dtype)
        else:
            lora_scale = (
                self.cross_attention_kwargs.get("scale", None) if self.cross_attention_kwargs is not None else None
            )
            prompt_embeds, negative_prompt_embeds = self.encode_prompt(
                prompt,
                device,
                num_images_per_prompt,
                self.do_classifier_free_guidance,
                negative_prompt,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds,
                lora_scale=lora_scale,
            )
            num_images = prompt_embeds.shape[0]

        # 3. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)

        # 4. Latents stay float32 with a float16/bfloat16 UNet: the update needs the precision.
        latents = self.prepare_latents(num_images, self._latents_dtype, device, generator, latents)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 5. Denoising loop (guidance is read every step: a callback may switch it off)
        for i, t in enumerate(self.progress_bar(timesteps)):
            if self.interrupt:
                continue
            guided = self.do_classifier_free_guidance
            context = torch.cat([negative_prompt_embeds, prompt_embeds]) if guided else prompt_embeds
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t).to(self.unet.dtype)
            noise_pred = self.unet(
                model_input,
                t,
                encoder_hidden_states=context,
                cross_attention_kwargs=self.cross_attention_kwargs,
            ).sample.to(latents.dtype)
            if guided:
                noise_negative, noise_text = noise_pred.chunk(2)
                noise_pred = noise_negative + self.guidance_scale * (noise_text - noise_negative)
            latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs).prev_sample
            if callback_on_step_end is not None:
                callback_kwargs = {}
                for k in callback_on_step_end_tensor_inputs or []:  # not a comprehension: its locals() are its own
                    callback_kwargs[k] = locals()[k]
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                for name, tensor in callback_outputs.items():
                    if isinstance(tensor, torch.Tensor) and not torch.isfinite(tensor).all():
                        self.maybe_free_model_hooks()
                        raise ValueError(
                            f"`callback_on_step_end` returned `{name}` holding NaN or infinite values at step {i}: "
                            "return finite tensors"
                        )
                latents = callback_outputs.pop("latents", latents)
                prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                negative_prompt_embeds = callback_outputs.pop("negative_prompt_embeds", negative_prompt_embeds)
                suspects += ["callback_on_step_end"] if "callback_on_step_end" not in suspects else []

        if not torch.isfinite(latents).all():  # never a silent black or NaN image
            self.maybe_free_model_hooks()
            raise ValueError(self._non_finite_message("the sampled images", suspects))

        # 6. Post-process: x in [-1, 1] -> [0, 1]
        if output_type == "latent":
            images = latents
        else:
            images = (latents / 2 + 0.5).clamp(0, 1)
            if output_type != "pt":
                images = images.permute(0, 2, 3, 1).cpu().numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
