"""The main job (``mnist-ddim-sample``): Lesson 6's sample grids from a diffusers pipeline.

Writes 8x8 grids of unconditional and conditional samples, the prompts (8 a line,
words and numerals mixed as in the lesson) and the exact settings used.
"""

import itertools
import json
import logging
import os
import time
from dataclasses import asdict
from typing import List, Optional, Sequence, Tuple

import torch
from diffusers.utils.torch_utils import randn_tensor

from pipeline_mnist_ddim.conversion.files import atomic_path, check_writable_location
from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder
from pipeline_mnist_ddim.lesson import labels_to_prompts
from pipeline_mnist_ddim.tools.commands.sample import SampleSettings
from pipeline_mnist_ddim.tools.devices import DTYPES, pick_device, resolve_dtype
from pipeline_mnist_ddim.tools.image_grid import save_grid


logger = logging.getLogger(__name__)
OUTPUT_FILES = (
    "unconditional_samples.png",
    "conditional_samples.png",
    "conditional_sample_prompts.txt",
    "settings.json",
)


def check_settings(settings: SampleSettings) -> torch.device:
    """Everything that can be checked before loading a model; returns the device."""
    settings.validate()
    check_writable_location(settings.output_dir)
    return pick_device(settings.device)


def check_scheduler_config(scheduler) -> None:
    """A scheduler config edited by hand can make every image NaN or fail mid-run: refuse it before sampling."""
    num_train_timesteps = scheduler.config.get("num_train_timesteps")
    if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
        raise ValueError(
            f"the scheduler's num_train_timesteps is {num_train_timesteps!r}, not a positive integer "
            "(was scheduler_config.json edited?)"
        )
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is not None and (
        len(alphas_cumprod) != num_train_timesteps
        or not torch.isfinite(alphas_cumprod).all()
        or not ((alphas_cumprod > 0) & (alphas_cumprod <= 1)).all()
    ):
        raise ValueError(
            f"the scheduler's noise levels are unusable ({len(alphas_cumprod)} cumulative alphas for "
            f"{num_train_timesteps} steps, each must be finite and in (0, 1]): was scheduler_config.json edited?"
        )


def check_timesteps(scheduler, num_inference_steps: int, flag: str = "--num_inference_steps") -> None:
    """At most the scheduler's training steps, and timesteps inside its schedule (a steps_offset of 1 with
    "leading" spacing reaches past it at S = num_train_timesteps): an IndexError mid-run otherwise."""
    max_steps = scheduler.config.num_train_timesteps
    if num_inference_steps > max_steps:
        raise ValueError(f"{flag} must be at most {max_steps} for this model, not {num_inference_steps}")
    scheduler = type(scheduler).from_config(scheduler.config)  # a copy: the pipeline's own is set when it runs
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps
    last = scheduler.config.num_train_timesteps - 1
    if len(timesteps) and not (0 <= int(timesteps.min()) and int(timesteps.max()) <= last):
        raise ValueError(
            f"{flag} {num_inference_steps} gives timesteps up to {int(timesteps.max())}, outside this scheduler's "
            f"0..{last} (its steps_offset is {scheduler.config.get('steps_offset')}): use fewer steps"
        )


def check_against_pipeline(settings: SampleSettings, pipe) -> None:
    """What needs the loaded pipeline: a usable scheduler, the step count it allows, the words the tokenizer knows."""
    check_scheduler_config(pipe.scheduler)
    check_timesteps(pipe.scheduler, settings.num_inference_steps)
    if settings.prompts is None:
        return
    if pipe.text_encoder is None:
        raise ValueError("this pipeline has no text encoder, so it cannot sample from --prompts: leave it out")
    check_known_words(pipe.accepted_words(), "--prompts", settings.prompts)


def check_known_words(known: Optional[Sequence[str]], flag: str, text: str) -> None:
    """With a small word-level vocabulary (``pipe.accepted_words()``; None: CLIP's, any word), every word of
    ``text`` must be in it."""
    if known is None:
        return
    unknown = sorted({word.lower() for word in text.split()} - set(known))
    if unknown:
        raise ValueError(f"{flag} has words this model never saw: {', '.join(unknown)}; it knows {', '.join(known)}")


def load_pipeline(settings: SampleSettings, dtype_name: Optional[str] = None):
    dtype = DTYPES[dtype_name or settings.dtype]
    if settings.checkpoint:
        from pipeline_mnist_ddim.conversion.pipeline_builder import build_pipeline

        pipe, _ = build_pipeline(
            settings.checkpoint,
            settings.text_encoder,
            dtype,
            use_ema=settings.ema,
            compact_text_encoder=settings.compact_text_encoder,
        )
        return pipe
    return load_pipeline_folder(settings.pipeline, dtype)


def _taken(folder: str) -> bool:
    return any(os.path.lexists(os.path.join(folder, f)) for f in OUTPUT_FILES)


def fresh_output_dir(output_dir: str, overwrite: bool) -> str:
    """``output_dir``, or ``output_dir/run-N`` when it already holds earlier outputs and overwrite is off.

    A guess, for saying early where the grids will go; `claim_output_dir` takes the folder for real.
    """
    if overwrite or not _taken(output_dir):
        return output_dir
    n = 2
    while _taken(os.path.join(output_dir, f"run-{n}")):
        n += 1
    return os.path.join(output_dir, f"run-{n}")


def first_missing_folder(folder: str) -> Optional[str]:
    """The outermost folder of ``folder``'s path that does not exist yet (what makedirs will create), or None."""
    missing, path = None, os.path.abspath(folder)
    while not os.path.lexists(path):
        missing, path = path, os.path.dirname(path)
    return missing


def remove_created_folders(folder: str, created: Optional[str]) -> None:
    """Removes ``folder`` and its parents up to ``created`` (what this run made), as long as they are empty."""
    if created is None:
        return
    path = os.path.abspath(folder)
    while os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)
        if path == created:
            break
        path = os.path.dirname(path)


def claim_output_dir(output_dir: str, overwrite: bool) -> Tuple[str, Optional[str]]:
    """The folder to write into and the folder this run created there (to remove if writing fails).

    Without ``overwrite``, a folder is claimed by creating its ``settings.json`` exclusively (O_EXCL), which
    the OS grants to one process only: two runs started together get ``output_dir`` and ``output_dir/run-2``,
    never the same folder.
    """
    if overwrite:
        created = first_missing_folder(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        return output_dir, created
    candidates = itertools.chain([output_dir], (os.path.join(output_dir, f"run-{n}") for n in itertools.count(2)))
    for folder in candidates:
        if _taken(folder):
            continue
        created = first_missing_folder(folder)
        os.makedirs(folder, exist_ok=True)
        try:
            os.close(os.open(os.path.join(folder, "settings.json"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:  # another run claimed it first
            continue
        if any(os.path.lexists(os.path.join(folder, f)) for f in OUTPUT_FILES if f != "settings.json"):
            os.remove(os.path.join(folder, "settings.json"))  # an earlier run's grids without its settings
            continue
        return folder, created
    raise AssertionError("unreachable")  # itertools.count never ends


def label_progress_bar(pipe, label: str) -> None:
    """Names the pipeline's next progress bar, keeping the rest of its configuration (e.g. ``disable``)."""
    pipe.set_progress_bar_config(**{**getattr(pipe, "_progress_bar_config", {}), "desc": label})


def write_prompts(prompts: List[str], path: str, per_line: int = 8) -> None:
    lines = [" ".join(prompts[i : i + per_line]) for i in range(0, len(prompts), per_line)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run(settings: SampleSettings) -> str:
    """Samples as Lesson 6 does; returns the folder written. Nothing is written unless sampling succeeded."""
    device = check_settings(settings)
    dtype = resolve_dtype(settings.dtype, device)
    pipe = load_pipeline(settings, dtype).to(device)
    check_against_pipeline(settings, pipe)
    output_dir = fresh_output_dir(settings.output_dir, settings.overwrite)
    if output_dir != settings.output_dir:  # said now, not after minutes of sampling
        logger.warning(
            "%s already holds a run: writing to %s (--overwrite replaces it instead)", settings.output_dir, output_dir
        )

    generator = torch.Generator().manual_seed(settings.seed)  # on the CPU: the same images on any device
    n = settings.num_samples
    config = pipe.unet.config
    shape = (n, config.in_channels, config.sample_size, config.sample_size)
    common = dict(
        num_inference_steps=settings.num_inference_steps, eta=settings.eta, output_type="pt", generator=generator
    )
    started = time.perf_counter()

    label_progress_bar(pipe, "unconditional")
    unconditional = pipe(latents=randn_tensor(shape, generator=generator), batch_size=n, **common).images
    if settings.prompts:
        words = settings.prompts.split()
        prompts = [words[i % len(words)] for i in range(n)]
    else:
        prompts = labels_to_prompts(torch.randint(0, 10, (n,), generator=generator).tolist(), generator)
    conditional = None
    if pipe.text_encoder is not None:
        latents = randn_tensor(shape, generator=generator)
        label_progress_bar(pipe, "conditional")
        conditional = pipe(prompt=prompts, latents=latents, guidance_scale=settings.guidance_scale, **common).images
    else:
        logger.warning("this pipeline has no text encoder: conditional samples skipped")
    seconds = time.perf_counter() - started
    for name, images in (("unconditional", unconditional), ("conditional", conditional)):
        if images is not None and not torch.isfinite(images).all():  # would be saved as black squares
            raise ValueError(f"the {name} samples hold NaN or infinite values: the model or its settings are broken")

    output_dir, created = claim_output_dir(settings.output_dir, settings.overwrite)
    try:
        with atomic_path(os.path.join(output_dir, "unconditional_samples.png")) as path:
            save_grid(unconditional, path)
        if conditional is not None:
            with atomic_path(os.path.join(output_dir, "conditional_samples.png")) as path:
                save_grid(conditional, path)
            with atomic_path(os.path.join(output_dir, "conditional_sample_prompts.txt")) as path:
                write_prompts(prompts, path)
        with atomic_path(os.path.join(output_dir, "settings.json")) as path, open(path, "w") as f:
            record = {
                **asdict(settings),
                "output_dir": output_dir,
                "pipeline": settings.pipeline or (None if settings.checkpoint else "embedded default"),
                "device": str(device),
                "dtype_used": dtype,
                "scheduler": type(pipe.scheduler).__name__,
                "sampling_seconds": round(seconds, 1),
            }
            json.dump(record, f, indent=2)
    except BaseException:
        if not settings.overwrite:  # this run's claim: the empty settings.json and the grids written so far
            for name in OUTPUT_FILES:
                if os.path.lexists(os.path.join(output_dir, name)):
                    os.remove(os.path.join(output_dir, name))
        remove_created_folders(output_dir, created)
        raise
    logger.info(
        "sampled %d + %d images in %.1f s on %s -> %s",
        n,
        n if conditional is not None else 0,
        seconds,
        device,
        output_dir,
    )
    return output_dir
