"""Lesson 5e's ``ConditionalMNistUNet`` as a diffusers `UNet2DConditionModel`.

This file is loaded as Hub remote code (``unet/unet_mnist.py`` in a pipeline folder),
so it imports only torch and diffusers.

The lesson's network is a stock four-level `UNet2DConditionModel` (blocks Down,
CrossAttnDown, Down, Down / mid with cross-attention / Up, Up, CrossAttnUp, Up; two
res blocks per level) except in three places a stock config cannot express:

1. Every transformer has one head of width 64, also in 256-channel blocks (stock:
   inner width = block width).
2. The third res block of up block 2 already narrows to the base width (256 + 128 ->
   128) with its transformer and upsampler at that width (stock: it stays at 256).
3. Hence the first res block of up block 3 sees 128 + 128 channels (stock: 256 + 128).

Exactly these modules are swapped after the stock constructor; the parent's
``forward`` runs unchanged, so attention processors, SDPA, ``torch.compile``, CPU
offload, LoRA loaders and fp16/bf16 behave as for any diffusers UNet. Also, the
lesson's ``conv_in``/``conv_out`` have no bias, and ``time_proj`` is swapped for
:class:`LessonTimestepSinusoid`, the lesson's arithmetic of the same formula as diffusers'
``Timesteps`` with ``freq_shift=1``, ``flip_sin_to_cos=False`` (which the config still records).
"""

import inspect
import math

import torch
from diffusers import Transformer2DModel, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.resnet import ResnetBlock2D, Upsample2D
from torch import nn


CHANNEL_MULTIPLIERS = (1, 2, 2, 2)
NORM_EPS = 1e-5  # the lesson's res blocks and output use GroupNorm's default; its transformers 1e-6


class LessonTimestepSinusoid(nn.Module):
    """[sin, cos] of t * exp(-ln(10000) * i / (half - 1)), computed in the lesson's order.

    diffusers' ``Timesteps`` multiplies ``-ln(10000) * i`` first and divides by ``half - 1``
    after; the lesson divides first. In float32 the frequencies then differ in the last bit,
    which t ~ 999 turns into embedding errors of up to 3.1e-5. This module is bit-exact.

    As in the lesson, the frequencies are float32 (torch's default dtype) and the angles take
    the timesteps' dtype: the model passes float64 ones when it runs in float64, float32 otherwise.
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = num_channels

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        frequencies = torch.exp(torch.arange(half, device=timesteps.device) * -(math.log(10000) / (half - 1)))
        angles = timesteps[:, None] * frequencies[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class MNISTUNet2DConditionModel(UNet2DConditionModel):
    r"""The Lesson 5e network; see the module docstring for how it differs from the stock layout.

    Args:
        sample_size (`int`, *optional*, defaults to 32): Height and width of the images.
        in_channels (`int`, *optional*, defaults to 1): Image channels (1 or 3).
        out_channels (`int`, *optional*, defaults to 1): Predicted-noise channels.
        base_channels (`int`, *optional*, defaults to 128): Width of the first level; the others are
            ``base_channels * (1, 2, 2, 2)``. A multiple of 32 (GroupNorm with 32 groups).
        cross_attention_dim (`int`, *optional*, defaults to 768): Width of the text context.
        transformer_inner_dim (`int`, *optional*, defaults to 64): Width of every transformer (one head).
        dropout (`float`, *optional*, defaults to 0.0): Dropout in res blocks and transformers.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 128,
        cross_attention_dim: int = 768,
        transformer_inner_dim: int = 64,
        dropout: float = 0.0,
    ):
        if base_channels % 32:
            raise ValueError(f"base_channels must be a multiple of 32 (GroupNorm groups), not {base_channels}")
        widths = tuple(base_channels * m for m in CHANNEL_MULTIPLIERS)
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            flip_sin_to_cos=False,
            freq_shift=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
            mid_block_type="UNetMidBlock2DCrossAttn",
            up_block_types=("UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=widths,
            layers_per_block=2,
            dropout=dropout,
            norm_num_groups=32,
            norm_eps=NORM_EPS,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=1,  # stock meaning: heads; every transformer is swapped below
        )
        base, wide = widths[0], widths[2]

        def transformer(channels: int) -> Transformer2DModel:
            block = Transformer2DModel(
                num_attention_heads=1,
                attention_head_dim=transformer_inner_dim,
                in_channels=channels,
                cross_attention_dim=cross_attention_dim,
                dropout=dropout,
                norm_num_groups=32,
            )
            # As the lesson: a fresh transformer starts as the identity (matters for training only).
            nn.init.zeros_(block.proj_out.weight)
            nn.init.zeros_(block.proj_out.bias)
            return block

        def resnet(in_ch: int, out_ch: int) -> ResnetBlock2D:
            temb_channels = self.time_embedding.linear_2.out_features
            return ResnetBlock2D(
                in_channels=in_ch, out_channels=out_ch, temb_channels=temb_channels, dropout=dropout, eps=NORM_EPS
            )  # eps: ResnetBlock2D's default is 1e-6, the stock blocks get norm_eps

        for attentions in (self.down_blocks[1].attentions, self.mid_block.attentions, self.up_blocks[2].attentions):
            for i, stock in enumerate(attentions):
                attentions[i] = transformer(stock.config.in_channels)
        self.up_blocks[2].resnets[2] = resnet(wide + base, base)
        self.up_blocks[2].attentions[2] = transformer(base)
        self.up_blocks[2].upsamplers[0] = Upsample2D(base, use_conv=True, out_channels=base)
        self.up_blocks[3].resnets[0] = resnet(base + base, base)
        self.time_proj = LessonTimestepSinusoid(base)
        self.conv_in = nn.Conv2d(in_channels, base, kernel_size=3, padding=1, bias=False)
        self.conv_out = nn.Conv2d(base, out_channels, kernel_size=3, padding=1, bias=False)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # The saved config also holds the stock keys, which __init__ derives from ours:
        # drop them instead of warning that they are unexpected.
        stock_keys = _init_arguments(UNet2DConditionModel) - _init_arguments(cls)
        config_dict = {k: v for k, v in config_dict.items() if k not in stock_keys}
        return super().extract_init_dict(config_dict, **kwargs)

    def get_time_embed(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        # The lesson's network runs only on timesteps of its own dtype (float32 ones, or float64 for
        # .double()): the angles are float64 exactly when the network is. diffusers would give
        # Python floats float64 and schedulers' int64 float32 angles, whatever the network.
        dtype = torch.float64 if sample.dtype == torch.float64 else torch.float32
        if torch.is_tensor(timestep):
            timestep = timestep.to(dtype)
        else:
            timestep = torch.tensor([timestep], dtype=dtype, device=sample.device)
        return super().get_time_embed(sample=sample, timestep=timestep)

    def set_attention_slice(self, slice_size="auto"):
        # "auto" halves each layer's head count, and every transformer here has one head: 1 // 2 = 0
        # would divide by zero. One head can only be sliced one at a time, which is "max".
        super().set_attention_slice("max" if slice_size == "auto" else slice_size)


def _init_arguments(model_class) -> set:
    return set(inspect.signature(model_class.__init__).parameters)
