"""Lesson 5e training on the reference network, writing lesson-format checkpoints.

Recipe (Lesson 5e): epsilon MSE on linear betas, 25% per-batch zero-context dropout,
each label prompted as its word or numeral at random, Adam (2e-4, betas 0.9/0.99),
gradient-norm clip 1.0, dropout 0.1. Additions, all optional: an EMA of the weights
(saved as ``ema_state_dict`` beside the lesson's keys), bf16 autocast, SDPA attention,
a wall-clock budget. Checkpoints ``gaussian_diffusion_ddpm-{step}.pt`` hold ``step``,
``model_state_dict`` (keys under ``_unet.``), ``optimizer_state_dict`` and ``loss`` as the
original, so Lesson 6's script could load them; the text encoder folder sits beside them.
"""

import copy
import glob
import json
import logging
import os
import re
import time
from dataclasses import asdict
from typing import Optional

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from pipeline_mnist_ddim.conversion.files import atomic_path
from pipeline_mnist_ddim.conversion.text_encoders import (
    TextEncoderError,
    build_text_encoder,
    encode_prompts,
    load_text_encoder,
)
from pipeline_mnist_ddim.lesson.constants import LESSON_PROMPTS
from pipeline_mnist_ddim.lesson.reference import LessonDiffusion, LessonUNet, ddim_sample
from pipeline_mnist_ddim.tools.commands.train import TrainSettings
from pipeline_mnist_ddim.tools.data import load_mnist
from pipeline_mnist_ddim.tools.image_grid import save_grid


logger = logging.getLogger(__name__)
CHECKPOINT_PATTERN = "gaussian_diffusion_ddpm-{step}.pt"


def load_weights(paths: str) -> dict:
    """The network's weights (lesson names, no ``_unet.`` prefix) from a lesson .pt or safetensors shards.

    Each file is read and checked as the converter reads it (``conversion.read_checkpoint``).
    """
    from pipeline_mnist_ddim.conversion.checkpoint import read_checkpoint  # imports diffusers: only when needed

    state_dict = {}
    for path in paths.split(","):
        state_dict.update(read_checkpoint(path)[0])
    return state_dict


def _latest_checkpoint(folder: str) -> Optional[str]:
    found = glob.glob(os.path.join(folder, CHECKPOINT_PATTERN.format(step="*")))
    steps = [(int(re.search(r"-(\d+)\.pt$", p).group(1)), p) for p in found]
    return max(steps)[1] if steps else None


def _load_text_encoder(config: TrainSettings, folder: str):
    if config.text_encoder == "default":
        text_encoder, tokenizer = build_text_encoder()
    else:
        text_encoder, tokenizer = load_text_encoder(config.text_encoder)  # checked as the converter checks it
        if text_encoder is None:
            raise TextEncoderError("training needs a text encoder: pass 'default', a Hub id or a folder, not 'none'")
    # Saved beside the checkpoints: the converter takes it with --text_encoder.
    if not os.path.isdir(folder):
        text_encoder.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return text_encoder.requires_grad_(False).eval(), tokenizer


def make_ema(parameters, decay: float, step: int = 0):
    """diffusers' ``EMAModel`` of ``parameters``, ``step`` updates into its warm-up.

    Update n (0-based) keeps ``min(decay, (1 + n) / (10 + n))`` of the average; the first (n = 0)
    keeps none, copying the weights, so the random initialisation never lingers.
    """
    from diffusers.training_utils import EMAModel

    ema = EMAModel(parameters, decay=decay, foreach=True)
    ema.optimization_step = step  # a resumed run continues the warm-up where it stopped
    return ema


def train(config: TrainSettings) -> str:
    """Runs (or resumes) training; returns the path of the last checkpoint."""
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=config.device == "cpu")
    os.makedirs(config.output_dir, exist_ok=True)
    torch.manual_seed(config.seed + accelerator.process_index)
    device = accelerator.device

    text_encoder, tokenizer = _load_text_encoder(config, os.path.join(config.output_dir, "text_encoder"))
    # The encoder is frozen and sees only twenty prompts: encode each once; index per sample.
    # Row 2 * label + choice is TEXT_LABELS[label][choice], exactly what encoding per batch gives.
    prompt_table = encode_prompts(text_encoder, tokenizer, list(LESSON_PROMPTS)).to(device)
    context_dim = prompt_table.shape[-1]

    images, labels = load_mnist(config.dataset, "train", config.channels)
    images, labels = images.to(device), labels.to(device)
    logger.info("training on %d digits from %s", len(images), config.dataset)

    unet = LessonUNet(config.base_channels, config.channels, config.channels, context_dim, config.dropout, config.sdpa)
    diffusion = LessonDiffusion(unet)
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=config.learning_rate, betas=(0.9, 0.99))

    if config.init_weights:
        unet.load_state_dict(load_weights(config.init_weights))
        logger.info("initialised the network from %s", config.init_weights)
    step = 0
    ema_weights = unet
    resume = _latest_checkpoint(config.output_dir) if config.resume == "latest" else config.resume
    if resume:
        from pipeline_mnist_ddim.conversion.checkpoint import read_training_state

        checkpoint = read_training_state(resume)
        unet.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint["ema"] is not None:
            ema_weights = copy.deepcopy(unet)
            ema_weights.load_state_dict(checkpoint["ema"])
        step = checkpoint["step"]
        logger.info("resumed from %s at step %d", resume, step)
    ema = ema_unet = None
    if config.ema_decay > 0:
        ema = make_ema(ema_weights.parameters(), config.ema_decay, step)
        ema.to(device)
        # An uncompiled twin of the network: the average is copied into it to be saved or sampled.
        ema_unet = copy.deepcopy(unet).requires_grad_(False).eval().to(device)
    if config.compile:
        # In place (Module.compile): the state dict keeps the lesson's keys, no "_orig_mod." prefix.
        unet.compile(mode=config.compile_mode, backend=config.compile_backend, dynamic=False)

    diffusion, optimizer = accelerator.prepare(diffusion, optimizer)
    with open(os.path.join(config.output_dir, "train_config.json"), "w") as f:
        json.dump({**asdict(config), "context_dim": context_dim}, f, indent=2)

    started = time.monotonic()
    last_path = None
    loss = torch.zeros(())
    progress = tqdm(initial=step, total=config.num_training_steps, disable=not accelerator.is_main_process)
    while step < config.num_training_steps:
        index = torch.randint(0, len(images), (config.batch_size,), device=device)
        choice = torch.randint(0, 2, (config.batch_size,), device=device)  # word or numeral
        context = prompt_table[labels[index] * 2 + choice]
        with accelerator.autocast():
            loss = diffusion(images[index], context)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(diffusion.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(accelerator.unwrap_model(diffusion)._unet.parameters())
        step += 1
        progress.update(1)
        if step % 25 == 0:
            progress.set_description(f"loss {loss.item():.4f}")

        out_of_time = config.max_minutes is not None and time.monotonic() - started > 60 * config.max_minutes
        done = step >= config.num_training_steps or out_of_time
        saving = step % config.save_every == 0 or done
        sampling = config.sample_every and (step % config.sample_every == 0 or done)
        if accelerator.is_main_process and (saving or sampling):
            if ema is not None:
                ema.copy_to(ema_unet.parameters())
            if saving:
                last_path = _save_checkpoint(
                    config, accelerator.unwrap_model(diffusion), optimizer, ema_unet, step, loss
                )
            if sampling:
                _sample_grids(config, ema_unet or accelerator.unwrap_model(diffusion)._unet, prompt_table, step)
        if out_of_time:
            logger.info("stopping at step %d: the %.1f-minute budget is spent", step, config.max_minutes)
            break
    progress.close()
    return last_path


def _save_checkpoint(config, diffusion, optimizer, ema, step, loss) -> str:
    checkpoint = {
        "step": step,
        "model_state_dict": diffusion.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "loss": loss.detach().cpu(),
    }
    if ema is not None:
        checkpoint["ema_state_dict"] = {f"_unet.{k}": v for k, v in ema.state_dict().items()}
    path = os.path.join(config.output_dir, CHECKPOINT_PATTERN.format(step=step))
    with atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)
    found = sorted(
        glob.glob(os.path.join(config.output_dir, CHECKPOINT_PATTERN.format(step="*"))), key=os.path.getmtime
    )
    for old in found[: -config.keep_last]:
        os.remove(old)
    return path


@torch.no_grad()
def _sample_grids(config, unet, prompt_table, step, num_samples: int = 64) -> None:
    """Like the lesson: 64 unconditional and 64 conditional samples, here with 50 DDIM steps."""
    was_training = unet.training
    unet.eval()
    generator = torch.Generator().manual_seed(0)
    device = prompt_table.device
    shape = (num_samples, config.channels, 32, 32)
    x_t = torch.randn(shape, generator=generator).to(device)
    zeros = torch.zeros(num_samples, prompt_table.shape[-1], device=device)
    save_grid(ddim_sample(unet, x_t, zeros), os.path.join(config.output_dir, f"sample-{step}.png"))
    labels = torch.arange(num_samples) % 10
    rows = (labels * 2 + torch.randint(0, 2, (num_samples,), generator=generator)).to(device)
    save_grid(
        ddim_sample(unet, x_t, prompt_table[rows]), os.path.join(config.output_dir, f"conditional_sample-{step}.png")
    )
    unet.train(was_training)
