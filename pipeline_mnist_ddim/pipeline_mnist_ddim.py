"""Lesson 6 of mindiffusion as a diffusers pipeline: DDIM sampling of the Lesson 5e MNIST model.

This file is loaded as Hub remote code (the pipeline folder's root), so it imports only
torch, diffusers and transformers (and, to upload, huggingface_hub, which diffusers requires),
and never the UNet subclass (diffusers loads that from ``unet/``; re-importing it here would
create a second class of the same name).
"""

import inspect
import math
import numbers
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from diffusers import (
    DDIMInverseScheduler,
    DiffusionPipeline,
    ImagePipelineOutput,
    SchedulerMixin,
    UNet2DConditionModel,
)
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor, is_valid_image_imagelist
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils import (
    USE_PEFT_BACKEND,
    logging,
    replace_example_docstring,
    scale_lora_layers,
    unscale_lora_layers,
)
from diffusers.utils.torch_utils import randn_tensor

from .pipeline_folder import PipelineFolderMixin


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


class MNISTDDIMPipeline(PipelineFolderMixin, DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    r"""
    Text-conditional MNIST sampling with DDIM (Lesson 6) from a Lesson 5e network.

    Inherits the loading, saving, offloading and attention methods of [`DiffusionPipeline`], and
    [`~loaders.StableDiffusionLoraLoaderMixin.load_lora_weights`] (with `fuse_lora`, `set_adapters`,
    `unload_lora_weights`) for LoRA adapters of the UNet and text encoder.

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

    # ------------------------------------------------------------------ inputs

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

    # ------------------------------------------------------------------ inversion

    def _images_for_inversion(self, images) -> torch.Tensor:
        """`invert`'s images as a float32 (B, C, H, W) tensor in [0, 1], refused before any work when they cannot be."""
        size, channels = self.unet.config.sample_size, self.unet.config.in_channels
        accepted = (
            f"{size}x{size} images with values in [0, 1]: torch tensors ({channels}, {size}, {size}) or "
            f"(B, {channels}, {size}, {size}), float numpy arrays ({size}, {size}), ({size}, {size}, {channels}) or "
            f"(B, {size}, {size}, {channels}), PIL images, or a list of one of these"
        )
        if not is_valid_image_imagelist(images) or (isinstance(images, list) and not images):
            raise ValueError(f"`images` must be {accepted}, not {type(images).__name__}")
        items = images if isinstance(images, list) else [images]
        kinds = {
            "tensor" if isinstance(i, torch.Tensor) else "PIL" if getattr(i, "shape", None) is None else "numpy"
            for i in items
        }
        if len(kinds) > 1:
            raise ValueError(f"`images` mixes {' and '.join(sorted(kinds))} images: pass one kind")
        for item in items:  # the size first, so that a huge image costs nothing
            shape = getattr(item, "shape", None)
            if shape is None:  # a PIL image: (width, height)
                spatial = tuple(item.size)
            elif isinstance(item, torch.Tensor) or len(shape) == 2:
                spatial = tuple(shape[-2:])
            else:  # numpy (H, W, C), (B, H, W) or (B, H, W, C), as diffusers' image processor reads them
                spatial = tuple(shape[:2] if len(shape) == 3 and shape[-1] == channels else shape[1:3])
            if spatial != (size, size):
                raise ValueError(f"`images` must be {accepted}; got an image of {spatial[0]}x{spatial[1]}")
            if shape is not None and not (
                torch.is_floating_point(item) if isinstance(item, torch.Tensor) else item.dtype.kind == "f"
            ):
                raise ValueError(
                    f"`images` must hold floats in [0, 1], not {item.dtype}: divide 0-255 pixels by 255, "
                    "or pass PIL images"
                )
        if isinstance(items[0], torch.Tensor):
            x = torch.cat(
                [i if i.ndim == 4 else i.reshape(-1, *i.shape[-3:]) if i.ndim == 3 else i[None, None] for i in items]
            )
        else:  # PIL images and numpy arrays as any diffusers pipeline takes them (PIL in any mode)
            processor = VaeImageProcessor(
                vae_scale_factor=1,
                do_resize=False,
                do_normalize=False,
                do_convert_grayscale=channels == 1,
                do_convert_rgb=channels == 3,
            )
            x = processor.preprocess(images)
        if tuple(x.shape[1:]) != (channels, size, size):
            raise ValueError(f"`images` must be {accepted}; got shape {tuple(x.shape)}")
        # Standard strides: an image processor's (B, H, W, 1) view reads as channels-last to the convolutions,
        # which then round differently from the same pixels given as a tensor.
        x = x.to(torch.float32).clone(memory_format=torch.contiguous_format)
        if not torch.isfinite(x).all():
            raise ValueError("`images` hold NaN or infinite values: pass finite values in [0, 1]")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(
                f"`images` must hold values in [0, 1], not [{x.min().item():g}, {x.max().item():g}]: "
                "map [-1, 1] images with (x + 1) / 2 and 0-255 pixels with x / 255"
            )
        return x

    @torch.no_grad()
    def invert(
        self,
        images: PipelineImageInput,
        prompt: Optional[Union[str, List[str]]] = None,
        num_inference_steps: int = 50,
        prompt_embeds: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        r"""
        Encodes images into DDIM latents x_T by running the deterministic (eta = 0) ODE forward.

        Sampling those latents with the same prompt and `num_inference_steps` (and `eta=0`)
        reconstructs the images, with an error that falls as the step count grows (the DDIM
        paper's reconstruction experiment). Steps with diffusers' `DDIMInverseScheduler`, made from
        this pipeline's scheduler config so that it inverts exactly the sampler in use.

        Args:
            images (`torch.Tensor`, `np.ndarray`, `PIL.Image.Image` or a list of them):
                Images of the UNet's `sample_size` (32 x 32) with values in [0, 1], as diffusers' image
                processor reads them: tensors (B, C, H, W) or (C, H, W); float arrays (B, H, W, C), (H, W, C) or
                (H, W); PIL images in any mode (converted to grayscale). Anything else is refused at once.
            prompt (`str` or `List[str]`, *optional*): one prompt, or one per image; `None` is unconditional.
            num_inference_steps (`int`, *optional*, defaults to 50): steps S of the same schedule as sampling.
            prompt_embeds (`torch.Tensor`, *optional*): precomputed contexts instead of `prompt`, one per image.

        Returns:
            `torch.Tensor`: the latents x_T, float32 (float64 with a float64 UNet), on the execution device.
        """
        self.check_inputs(prompt=prompt, num_inference_steps=num_inference_steps, prompt_embeds=prompt_embeds)
        if "timestep_spacing" not in self.scheduler.config or "set_alpha_to_one" not in self.scheduler.config:
            raise ValueError(f"invert() needs a DDIM scheduler, not {type(self.scheduler).__name__}")
        images = self._images_for_inversion(images)
        device = self._execution_device
        batch_size = images.shape[0]
        if isinstance(prompt, list) and len(prompt) != batch_size:
            raise ValueError(f"got {len(prompt)} prompts for {batch_size} images: pass one prompt, or one per image")
        if prompt_embeds is not None and prompt_embeds.shape[0] != batch_size:
            raise ValueError(
                f"got `prompt_embeds` for {prompt_embeds.shape[0]} images and {batch_size} `images`: pass one per image"
            )
        suspects = ["prompt_embeds"] if prompt_embeds is not None else []
        if prompt is not None:
            prompt_embeds, _ = self.encode_prompt(prompt, device, batch_size if isinstance(prompt, str) else 1)
        if prompt_embeds is not None:
            context = prompt_embeds.to(device=device, dtype=self.unet.dtype)
        else:
            context = torch.zeros(
                batch_size, 1, self.unet.config.cross_attention_dim, device=device, dtype=self.unet.dtype
            )
        inverse_scheduler = DDIMInverseScheduler.from_config(self.scheduler.config)
        inverse_scheduler.set_timesteps(num_inference_steps, device=device)
        x = images.to(device=device, dtype=self._latents_dtype) * 2 - 1
        for t in self.progress_bar(inverse_scheduler.timesteps):  # [0, 20, ..., 980] for S = 50
            # The ODE's Euler step going up: eps at the point in hand, which is why the round trip
            # is exact only as S grows.
            eps = self.unet(x.to(self.unet.dtype), t, encoder_hidden_states=context).sample.to(x.dtype)
            x = inverse_scheduler.step(eps, t, x).prev_sample
        self.maybe_free_model_hooks()
        if not torch.isfinite(x).all():
            raise ValueError(self._non_finite_message("the inverted latents", suspects))
        return x

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
                With a prompt it counts prompts, as in Stable Diffusion: it may be left out, and is
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
