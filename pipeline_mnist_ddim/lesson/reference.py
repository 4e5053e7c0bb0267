"""A faithful re-implementation of the Lesson 5e network and the Lesson 5/6 samplers.

This is the oracle of the port: its ``state_dict()`` has exactly the key names and
shapes of a Lesson 5e checkpoint's ``model_state_dict`` (``_unet.`` prefix included),
so a real checkpoint loads into :class:`LessonDiffusion` with ``strict=True``. Every
parity test compares the diffusers port against this module, and the training script
trains it. Unlike the original it runs on any device and its widths are configurable.

Sources (read, not copied): mindiffusion ``lesson_05/sublesson_d`` (network, DDPM),
``lesson_05/sublesson_e`` (text conditioning, training), ``lesson_06`` (DDIM).
"""

import math
from typing import Iterator, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from pipeline_mnist_ddim.lesson import NUM_TRAIN_TIMESTEPS, lesson_betas


ATTENTION_HEAD_DIM = 64
CHANNEL_MULTIPLIERS = (1, 2, 2, 2)


# ---------------------------------------------------------------- building blocks


class SinusoidalEmbedding(nn.Module):
    """[sin, cos] of t * exp(-ln(10000) * i / (half - 1)), i < half."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        angles = t[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class NormActConv(nn.Module):
    """GroupNorm(32) -> SiLU -> [Dropout] -> Conv3x3; the lesson's ``Block`` (keys ``norm``, ``proj``)."""

    def __init__(self, dim: int, dim_out: int, dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(32, dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(F.silu(self.norm(x))))


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.timestep_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = NormActConv(dim, dim_out)
        self.block2 = NormActConv(dim_out, dim_out, dropout)
        # Present in every block's state dict; used only where the width changes.
        self.residual_proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.timestep_proj(temb)[:, :, None, None]
        h = self.block2(h)
        if x.shape[1] != h.shape[1]:
            x = self.residual_proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # a 1x1 conv
        return h + x


class CrossAttention(nn.Module):
    def __init__(self, dim: int, context_dim: Optional[int] = None, dropout: float = 0.0, sdpa: bool = False):
        super().__init__()
        context_dim = context_dim or dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.sdpa = sdpa  # same maths, fused kernel: for training speed

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # the lesson's single head: softmax(q k^T / sqrt(d)) v
            attn = (torch.einsum("bid,bjd->bij", q, k) * q.shape[-1] ** -0.5).softmax(dim=-1)
            out = torch.einsum("bij,bjd->bid", attn, v)
        return self.dropout(self.to_out(out))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, context_dim: int, dropout: float = 0.0, sdpa: bool = False):
        super().__init__()
        self.attn1 = CrossAttention(dim, dropout=dropout, sdpa=sdpa)
        self.ff = nn.Sequential()
        self.ff.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.attn2 = CrossAttention(dim, context_dim, dropout=dropout, sdpa=sdpa)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # Operand order as the lesson's: it decides the sums' memory layout (see SpatialTransformer).
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff.net(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """GroupNorm -> 1x1 conv to 64 -> one transformer block -> 1x1 conv back -> + input.

    The reshapes follow the lesson's einops ``rearrange`` exactly, memory layout included: its
    way back to an image is a channels-last view, so the output convolution, and every layer
    after the first transformer, runs on channels-last tensors, whose CPU kernels sum in another
    order (GroupNorm differs by ~1e-6, the network's output by ~1e-5 otherwise).
    """

    def __init__(self, channels: int, context_dim: int, dropout: float = 0.0, sdpa: bool = False):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, ATTENTION_HEAD_DIM, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(ATTENTION_HEAD_DIM, context_dim, dropout, sdpa)])
        self.proj_out = nn.Conv2d(ATTENTION_HEAD_DIM, channels, 1)
        nn.init.zeros_(self.proj_out.weight)  # the lesson's zero_module: starts as identity
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, ATTENTION_HEAD_DIM)  # (B, HW, 64)
        if context.dim() == 2:
            context = context[:, None, :]  # (B, D) is a single token
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        tokens = tokens.reshape(b, h, w, ATTENTION_HEAD_DIM).permute(0, 3, 1, 2)  # a channels-last view
        return self.proj_out(tokens) + x


class Skip(nn.Module):
    """An empty slot of the lesson's module lists (no weights)."""

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return x


# ---------------------------------------------------------------- the network


class LessonUNet(nn.Module):
    """Lesson 5e's ``ConditionalMNistUNet`` with configurable widths.

    ``forward(x, t, context)``: x (B, in, 32, 32), t (B,) float or long, context
    (B, N, D) or (B, D) -> epsilon (B, out, 32, 32).
    """

    def __init__(
        self,
        base_channels: int = 128,
        in_channels: int = 1,
        out_channels: Optional[int] = None,
        context_dim: int = 768,
        dropout: float = 0.0,
        sdpa: bool = False,
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.config = dict(
            base_channels=base_channels, in_channels=in_channels, out_channels=out_channels, context_dim=context_dim
        )
        c0, c1, c2, c3 = (base_channels * m for m in CHANNEL_MULTIPLIERS)
        temb = 4 * base_channels

        def res(dim, dim_out):
            return ResnetBlock(dim, dim_out, temb, dropout)

        def attn(dim):
            return SpatialTransformer(dim, context_dim, dropout, sdpa)

        def down(dim):
            return nn.Conv2d(dim, dim, 3, padding=1, stride=2)

        def up(dim):
            return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim, dim, 3, padding=1))

        self.time_proj = nn.Sequential(
            SinusoidalEmbedding(base_channels), nn.Linear(base_channels, temb), nn.SiLU(), nn.Linear(temb, temb)
        )
        self.initial_convolution = nn.Conv2d(in_channels, base_channels, 3, padding=1, bias=False)
        ml = nn.ModuleList
        self.downs = ml(
            [
                ml([res(base_channels, c0), Skip(), res(c0, c0), Skip(), down(c0)]),  # 32x32
                ml([res(c0, c1), attn(c1), res(c1, c1), attn(c1), down(c1)]),  # 16x16
                ml([res(c1, c2), Skip(), res(c2, c2), Skip(), down(c2)]),  # 8x8
                ml([res(c2, c3), Skip(), res(c3, c3), Skip(), Skip()]),  # 4x4
            ]
        )
        self.middle = ml([res(c3, c3), attn(c3), res(c3, c3)])
        self.ups = ml(
            [
                ml([res(c3 + c3, c3), Skip(), res(c3 + c3, c3), Skip(), res(c3 + c2, c2), Skip(), up(c2)]),  # 4x4
                ml([res(c2 + c2, c2), Skip(), res(c2 + c2, c2), Skip(), res(c2 + c1, c1), Skip(), up(c1)]),  # 8x8
                ml([res(c1 + c1, c1), attn(c1), res(c1 + c1, c1), attn(c1), res(c1 + c0, c0), attn(c0), up(c0)]),  # 16
                ml(
                    [
                        res(c0 + c0, c0),
                        Skip(),
                        res(c0 + c0, c0),
                        Skip(),
                        res(c0 + base_channels, base_channels),
                        Skip(),
                        Skip(),
                    ]
                ),  # 32x32
            ]
        )
        self.final_projection = nn.Sequential(
            nn.GroupNorm(32, base_channels),
            nn.SiLU(),
            nn.Conv2d(base_channels, out_channels, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        temb = self.time_proj(t)
        h = self.initial_convolution(x)
        skips = [h]
        for level, (res1, attn1, res2, attn2, downsample) in enumerate(self.downs):
            h = attn1(res1(h, temb), context)
            skips.append(h)
            h = attn2(res2(h, temb), context)
            skips.append(h)
            h = downsample(h)
            if level != len(self.downs) - 1:
                skips.append(h)
        res1, attn, res2 = self.middle
        h = res2(attn(res1(h, temb), context), temb)
        for res1, attn1, res2, attn2, res3, attn3, upsample in self.ups:
            h = attn1(res1(torch.cat([h, skips.pop()], dim=1), temb), context)
            h = attn2(res2(torch.cat([h, skips.pop()], dim=1), temb), context)
            h = attn3(res3(torch.cat([h, skips.pop()], dim=1), temb), context)
            h = upsample(h)
        return self.final_projection(h)


class LessonDiffusion(nn.Module):
    """The lesson's ``GaussianDiffusion_ConditionalDDPM``: holds the network as ``_unet``."""

    def __init__(self, unet: LessonUNet, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS):
        super().__init__()
        self._unet = unet
        self.num_train_timesteps = num_train_timesteps
        # Not persistent: the state dict must hold exactly the lesson's keys.
        alphas_cumprod = torch.cumprod(1 - lesson_betas(num_train_timesteps), dim=0)
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    def forward(self, images: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Algorithm 1, lines 3-5, with the lesson's 25% per-batch zero-context dropout.

        ``images`` are in [0, 1]; the loss is the epsilon MSE.
        """
        x0 = images * 2 - 1
        t = torch.randint(0, self.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        if torch.rand(()) <= 0.25:
            context = torch.zeros_like(context)
        return F.mse_loss(self._unet(x_t, t, context), noise)


# ---------------------------------------------------------------- the samplers


def ddim_timesteps(num_inference_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> List[int]:
    """Lesson 6's ``range(0, T, T // S)``: S = 50 gives [0, 20, ..., 980]."""
    return list(range(0, num_train_timesteps, num_train_timesteps // num_inference_steps))


@torch.no_grad()
def ddim_sample(
    unet: nn.Module,
    x_t: torch.Tensor,
    context: torch.Tensor,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    noises: Optional[Iterator[torch.Tensor]] = None,
) -> torch.Tensor:
    """Lesson 6: DDIM, equation 12 of the DDIM paper, from x_T to an image in [0, 1].

    ``noises`` yields the z of each step when eta > 0 (default: ``torch.randn_like``). The
    timesteps take x_t's dtype (the lesson's float32; float64 for a network run in float64), and the
    schedule is the lesson's float32 alpha-bars whatever the dtype, as Lesson 6 computes them.
    """
    betas = lesson_betas().to(x_t.device)
    # alpha-bar with a leading 1 so that index t + 1 gives step t and index 0 gives step "-1"
    alphas_cumprod = torch.cat([torch.ones(1, device=x_t.device), torch.cumprod(1 - betas, dim=0)])
    seq = ddim_timesteps(num_inference_steps, len(betas))
    seq_prev = [-1] + seq[:-1]
    x = x_t
    for t, t_prev in zip(reversed(seq), reversed(seq_prev)):  # [(980, 960), ..., (0, -1)]
        ab, ab_prev = alphas_cumprod[t + 1], alphas_cumprod[t_prev + 1]
        eps = unet(x, torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype), context)
        x0_pred = (x - (1 - ab).sqrt() * eps) / ab.sqrt()  # no clipping
        sigma = eta * ((1 - ab / ab_prev) * (1 - ab_prev) / (1 - ab)).sqrt()
        z = next(noises) if noises is not None else torch.randn_like(x)
        x = ab_prev.sqrt() * x0_pred + sigma * z + (1 - ab_prev - sigma**2).sqrt() * eps
    return (x + 1) / 2


@torch.no_grad()
def ddim_invert(
    unet: nn.Module, images: torch.Tensor, context: torch.Tensor, num_inference_steps: int = 50
) -> torch.Tensor:
    """DDIM encoding (paper section 5.4): equation 12 with eta = 0 run from an image in [0, 1] up to x_T.

    The ODE's Euler step going up: eps is taken at the point in hand, labelled with the step's
    target timestep (as in diffusers' DDIMInverseScheduler and the inversion papers that use it),
    so sampling x_T back with the same S reconstructs the image up to the discretisation error.
    """
    betas = lesson_betas().to(images.device)
    alphas_cumprod = torch.cat([torch.ones(1, device=images.device), torch.cumprod(1 - betas, dim=0)])
    seq = ddim_timesteps(num_inference_steps, len(betas))
    seq_prev = [-1] + seq[:-1]
    x = images * 2 - 1
    for t, t_prev in zip(seq, seq_prev):  # [(0, -1), (20, 0), ..., (980, 960)]
        ab, ab_prev = alphas_cumprod[t + 1], alphas_cumprod[t_prev + 1]
        eps = unet(x, torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype), context)
        x0_pred = (x - (1 - ab_prev).sqrt() * eps) / ab_prev.sqrt()
        x = ab.sqrt() * x0_pred + (1 - ab).sqrt() * eps
    return x


@torch.no_grad()
def ddpm_sample(
    unet: nn.Module,
    x_t: torch.Tensor,
    context: torch.Tensor,
    noises: Optional[Iterator[torch.Tensor]] = None,
) -> torch.Tensor:
    """Lesson 5: DDPM Algorithm 2 with "fixed large" variance (sigma^2 = beta), 1000 steps."""
    betas = lesson_betas().to(x_t.device)
    alphas = 1 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    x = x_t
    for t in reversed(range(len(betas))):
        eps = unet(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long), context)
        z = torch.zeros_like(x) if t == 0 else (next(noises) if noises is not None else torch.randn_like(x))
        coeff = (1 - alphas[t]) / (1 - alphas_cumprod[t]).sqrt()
        x = (x - coeff * eps) / alphas[t].sqrt() + betas[t].sqrt() * z  # line 4 of Algorithm 2
    return (x + 1) / 2
