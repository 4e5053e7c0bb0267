"""DDIM inversion: images to the latents x_T that sample back to them (the DDIM paper's reconstruction).

Hub remote code beside ``pipeline_mnist_ddim.py``, which imports it relatively (diffusers copies such files
along), so it imports only torch and diffusers.
"""

from typing import List, Optional, Union

import torch
from diffusers import DDIMInverseScheduler
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor, is_valid_image_imagelist


class PipelineInversionMixin:
    """`invert` of `MNISTDDIMPipeline`, stepping with diffusers' `DDIMInverseScheduler`."""

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
