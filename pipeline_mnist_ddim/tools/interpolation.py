"""DDIM's latent-space properties (logic of ``scripts/interpolate.py``).

- [`slerp`]: spherical interpolation, the DDIM paper's way between two Gaussian latents x_T
  (a straight line would pass through latents of too small a norm, which decode to blur).
- [`interpolate_latents`] / [`interpolate_prompts`]: strips decoded with deterministic DDIM,
  between two latents, or between two prompts' embeddings at a fixed latent.
- [`consistency`]: the same latents decoded with several step counts S; with eta = 0 the
  image is a function of x_T, so the high-level content (the digit) should not depend on S.
"""

import json
import logging
import os
from dataclasses import asdict
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from pipeline_mnist_ddim.conversion.files import atomic_path
from pipeline_mnist_ddim.tools.commands.interpolate import InterpolationSettings
from pipeline_mnist_ddim.tools.image_grid import save_grid
from pipeline_mnist_ddim.tools.metrics import predict_labels


logger = logging.getLogger(__name__)


def slerp(a: torch.Tensor, b: torch.Tensor, t: Union[float, torch.Tensor]) -> torch.Tensor:
    r"""Spherical linear interpolation between ``a`` and ``b`` (same shape), one vector per row of dim 0.

    ``sin((1 - t) theta) / sin(theta) a + sin(t theta) / sin(theta) b`` with theta the angle
    between the flattened rows, computed in float64; t = 0 and t = 1 return the inputs
    exactly. Nearly parallel rows fall back to linear interpolation (no 0/0).

    Args:
        a (`torch.Tensor`): (B, ...) start points, e.g. latents (B, C, H, W) or embeddings (B, T, D).
        b (`torch.Tensor`): (B, ...) end points.
        t (`float` or `torch.Tensor`): fraction in [0, 1], a scalar or one per row.

    Returns:
        `torch.Tensor`: shape and dtype of ``a``.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    a64, b64 = a.flatten(1).double(), b.flatten(1).double()
    t = torch.as_tensor(t, dtype=torch.float64, device=a.device).reshape(-1)
    cos = (a64 * b64).sum(1) / (a64.norm(dim=1) * b64.norm(dim=1)).clamp_min(1e-30)
    theta = cos.clamp(-1.0, 1.0).acos()
    sin = theta.sin()
    linear = sin < 1e-6
    safe_sin = torch.where(linear, torch.ones_like(sin), sin)
    weight_a = torch.where(linear, 1 - t, ((1 - t) * theta).sin() / safe_sin)
    weight_b = torch.where(linear, t, (t * theta).sin() / safe_sin)
    return (weight_a[:, None] * a64 + weight_b[:, None] * b64).view(a.shape).to(a.dtype)


def slerp_path(a: torch.Tensor, b: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``num_frames`` points from ``a`` to ``b`` (each (1, ...)), endpoints included: (num_frames, ...)."""
    if num_frames < 2:
        raise ValueError(f"an interpolation needs at least 2 frames, not {num_frames}")
    return torch.cat([slerp(a, b, float(t)) for t in torch.linspace(0, 1, num_frames)])


def seeded_latent(pipe, seed: int) -> torch.Tensor:
    """x_T of one image from a CPU generator (the same on any device), shape (1, C, H, W)."""
    config = pipe.unet.config
    shape = (1, config.in_channels, config.sample_size, config.sample_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def decode(
    pipe,
    latents: torch.Tensor,
    num_inference_steps: int,
    prompt: Optional[str] = None,
    prompt_embeds: Optional[torch.Tensor] = None,
    callback_on_step_end: Optional[Callable] = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from given latents; (N, C, H, W) in [0, 1] on the CPU."""
    inputs: Dict[str, Any] = dict(batch_size=len(latents))
    if prompt is not None:
        inputs = dict(prompt=[prompt] * len(latents))
    elif prompt_embeds is not None:
        inputs = dict(prompt_embeds=prompt_embeds)
    if callback_on_step_end is not None:  # e.g. the demo's wall-time limit
        inputs["callback_on_step_end"] = callback_on_step_end
    images = pipe(**inputs, latents=latents, num_inference_steps=num_inference_steps, eta=0.0, output_type="pt").images
    return images.float().cpu()


def interpolate_latents(
    pipe,
    latent_a: torch.Tensor,
    latent_b: torch.Tensor,
    num_frames: int = 10,
    num_inference_steps: int = 50,
    prompt: Optional[str] = None,
    callback_on_step_end: Optional[Callable] = None,
) -> torch.Tensor:
    """A strip of DDIM decodes along the slerp from ``latent_a`` to ``latent_b``: (num_frames, C, H, W)."""
    path = slerp_path(latent_a, latent_b, num_frames)
    return decode(pipe, path, num_inference_steps, prompt=prompt, callback_on_step_end=callback_on_step_end)


def interpolate_prompts(
    pipe,
    prompt_a: str,
    prompt_b: str,
    latent: torch.Tensor,
    num_frames: int = 10,
    num_inference_steps: int = 50,
    callback_on_step_end: Optional[Callable] = None,
) -> torch.Tensor:
    """A strip at one fixed latent whose context slerps from ``prompt_a``'s embedding to ``prompt_b``'s."""
    device = pipe._execution_device
    embeds = slerp_path(pipe.encode_prompt(prompt_a, device)[0], pipe.encode_prompt(prompt_b, device)[0], num_frames)
    latents = latent.repeat(num_frames, 1, 1, 1)
    return decode(pipe, latents, num_inference_steps, prompt_embeds=embeds, callback_on_step_end=callback_on_step_end)


@torch.no_grad()
def consistency(
    pipe,
    classifier: torch.nn.Module,
    latents: torch.Tensor,
    steps: Sequence[int] = (10, 20, 50, 100, 1000),
    prompt: Optional[str] = None,
) -> Dict[str, Any]:
    """Decodes the same latents with each S; how often does the classifier see the same digit at every S?

    Returns:
        `dict`: ``images`` (len(steps), N, C, H, W), ``labels`` (len(steps) lists of N),
        ``share_same_label`` in [0, 1], and ``rms_to_last`` (per S, the mean per-pixel RMS
        distance to the images of the largest S).
    """
    images = torch.stack([decode(pipe, latents, s, prompt=prompt) for s in tqdm(steps, desc="consistency")])
    labels = torch.stack([predict_labels(classifier, row) for row in images])
    same = (labels == labels[0]).all(dim=0)
    rms = ((images - images[-1]) ** 2).flatten(2).mean(dim=2).sqrt().mean(dim=1)
    return {
        "steps": list(steps),
        "images": images,
        "labels": labels.tolist(),
        "share_same_label": float(same.float().mean()),
        "rms_to_last": dict(zip(map(str, steps), rms.tolist())),
    }


def save_labelled_rows(images: torch.Tensor, path: str, row_labels: Sequence[str], nrow: int) -> None:
    """``save_grid`` with a text label left of each row (e.g. "S=10")."""
    save_grid(images, path, nrow=nrow)
    grid = Image.open(path).convert("L")
    margin = 8 + 7 * max(len(label) for label in row_labels)
    canvas = Image.new("L", (grid.width + margin, grid.height), 0)
    canvas.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = (grid.height - 2) / len(row_labels)
    for i, label in enumerate(row_labels):
        draw.text((4, int(2 + i * row_height + row_height / 2 - 5)), label, fill=255)
    canvas.save(path)


# ---------------------------------------------------------------------------- the CLI's run


def check_against_pipeline(pipe, settings: InterpolationSettings) -> None:
    """What needs the loaded pipeline, checked before any figure is drawn: step counts its scheduler allows,
    prompts its text encoder knows."""
    from pipeline_mnist_ddim.tools.sample import check_known_words, check_timesteps

    step_counts = []
    if "latents" in settings.sections or "prompts" in settings.sections:
        step_counts.append(("--num_inference_steps", settings.num_inference_steps))
    if "consistency" in settings.sections:
        step_counts += [("--consistency_steps", s) for s in settings.consistency_steps]
    for flag, steps in step_counts:
        check_timesteps(pipe.scheduler, steps, flag)
    prompts = []
    if "latents" in settings.sections and settings.latent_prompt is not None:
        prompts.append(("--latent_prompt", settings.latent_prompt))
    if "prompts" in settings.sections and pipe.text_encoder is not None:
        prompts += [("--prompt_pairs", part) for pair in settings.prompt_pairs for part in pair.split(",")]
    if "consistency" in settings.sections and settings.consistency_prompt is not None:
        prompts.append(("--consistency_prompt", settings.consistency_prompt))
    if prompts and pipe.text_encoder is None:
        raise ValueError(f"this pipeline has no text encoder, so {prompts[0][0]} cannot be used: leave it out")
    known = pipe.accepted_words() if pipe.text_encoder is not None else None
    for flag, prompt in prompts:
        check_known_words(known, flag, prompt)


def run_interpolation(
    pipe, settings: InterpolationSettings, output_dir: str, classifier: Optional[torch.nn.Module] = None
) -> Dict[str, Any]:
    """Draws the strips and the consistency grid, then writes them; returns a JSON-ready summary.

    Nothing is written until every figure is drawn; each file is written atomically, and a failed write
    removes this run's files (and the folder, when this run made it).
    """
    settings.validate()
    check_against_pipeline(pipe, settings)
    pipe.set_progress_bar_config(disable=True)
    results: Dict[str, Any] = {"settings": asdict(settings)}
    figures: Dict[str, Callable[[str], None]] = {}  # file name -> writer taking the path to write
    if "latents" in settings.sections:
        pairs = [
            (seeded_latent(pipe, settings.seed + 2 * i), seeded_latent(pipe, settings.seed + 2 * i + 1))
            for i in range(settings.num_pairs)
        ]
        frames, steps = settings.num_frames, settings.num_inference_steps
        strips = [
            interpolate_latents(pipe, a, b, frames, steps, settings.latent_prompt)
            for a, b in tqdm(pairs, desc="latent slerp")
        ]
        figures["slerp_latents.png"] = _grid_writer(torch.cat(strips), settings.num_frames)
    if "prompts" in settings.sections and pipe.text_encoder is not None:
        pairs = [pair.split(",") for pair in settings.prompt_pairs]
        latent = seeded_latent(pipe, settings.seed + settings.PROMPT_STRIP_SEED_OFFSET)
        frames, steps = settings.num_frames, settings.num_inference_steps
        strips = [
            interpolate_prompts(pipe, a.strip(), b.strip(), latent, frames, steps)
            for a, b in tqdm(pairs, desc="prompt slerp")
        ]
        figures["slerp_prompts.png"] = _grid_writer(torch.cat(strips), settings.num_frames)
    if "consistency" in settings.sections:
        result, images = _run_consistency(pipe, settings, classifier)
        labels = [f"S={s}" for s in result["steps"]]
        figures["consistency.png"] = lambda path: save_labelled_rows(
            images, path, labels, settings.consistency_samples
        )
        results["consistency"] = result
    for name in figures:
        section = {"slerp_latents.png": "latents", "slerp_prompts.png": "prompts"}.get(name, "consistency")
        results[section] = {**results.get(section, {}), "path": os.path.join(output_dir, name)}

    from pipeline_mnist_ddim.tools.sample import first_missing_folder, remove_created_folders

    created = first_missing_folder(output_dir)
    written = []
    try:
        os.makedirs(output_dir, exist_ok=True)
        for name, write in figures.items():
            with atomic_path(os.path.join(output_dir, name)) as path:
                write(path)
            written.append(name)
            logger.info("wrote %s", os.path.join(output_dir, name))
        with atomic_path(os.path.join(output_dir, "interpolation.json")) as path, open(path, "w") as f:
            json.dump(results, f, indent=2)
    except BaseException:
        for name in written:
            os.remove(os.path.join(output_dir, name))
        remove_created_folders(output_dir, created)
        raise
    return results


def _grid_writer(images: torch.Tensor, nrow: int) -> Callable[[str], None]:
    return lambda path: save_grid(images, path, nrow=nrow)


def _run_consistency(pipe, settings: InterpolationSettings, classifier):
    from pipeline_mnist_ddim.tools.classifier import load_default_classifier

    classifier = (classifier or load_default_classifier()).to(pipe._execution_device)
    latents = torch.cat(
        [
            seeded_latent(pipe, settings.seed + settings.CONSISTENCY_SEED_OFFSET + i)
            for i in range(settings.consistency_samples)
        ]
    )
    result = consistency(pipe, classifier, latents, settings.consistency_steps, settings.consistency_prompt)
    images = result.pop("images").flatten(0, 1)
    logger.info("same digit at every S for %.0f%% of latents", 100 * result["share_same_label"])
    return result, images
