"""The main job: Lesson 6's sampling script on a diffusers pipeline.

Writes 8x8 grids of unconditional and conditional samples, the prompts (8 a line,
words and numerals mixed as in the lesson) and the exact settings used.
"""

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import List, Optional

import torch
from diffusers.utils.torch_utils import randn_tensor

from .image_grid import save_grid
from .pipeline_folder import load_pipeline_folder
from .reference import labels_to_prompts

logger = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto",) + tuple(DTYPES)
OUTPUT_FILES = ("unconditional_samples.png", "conditional_samples.png", "conditional_sample_prompts.txt", "settings.json")


@dataclass
class SampleSettings:
    pipeline: Optional[str] = None  # a folder or Hub id; None = the embedded default
    model_checkpoint: Optional[str] = None  # a Lesson 5e checkpoint, converted in memory
    text_encoder: Optional[str] = None  # for --model_checkpoint prompts
    ema: bool = False
    output_dir: str = "output"
    overwrite: bool = False
    num_samples: int = 64
    num_inference_steps: int = 50
    eta: float = 0.0
    guidance_scale: float = 1.0
    seed: int = 42
    device: str = "auto"
    dtype: str = "float32"  # "auto": see resolve_dtype
    prompts: Optional[str] = None  # "7 seven 3 ..."; default: random labels as the lesson


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (Intel AMX or AVX512-BF16)."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.10
    if get_capabilities is not None:
        capabilities = get_capabilities()
        return bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def resolve_dtype(name: str, device: torch.device) -> str:
    """``auto`` is bfloat16 weights (latents stay float32) on a CPU with native bf16, float32 elsewhere.

    On such a CPU bf16 weights halve the main job's time (README, "Speed"); without native bf16 it
    is emulated and slower, and GPUs keep float32 until measured.
    """
    if name != "auto":
        return name
    return "bfloat16" if device.type == "cpu" and cpu_has_native_bf16() else "float32"


def load_pipeline(settings: SampleSettings, dtype_name: Optional[str] = None):
    dtype = DTYPES[dtype_name or settings.dtype]
    if settings.model_checkpoint:
        from .pipeline_builder import build_pipeline

        pipe, _ = build_pipeline(settings.model_checkpoint, settings.text_encoder, dtype, use_ema=settings.ema)
        return pipe
    return load_pipeline_folder(settings.pipeline, dtype)


def fresh_output_dir(output_dir: str, overwrite: bool) -> str:
    """``output_dir``, or ``output_dir/run-N`` when it already holds earlier outputs and overwrite is off."""
    taken = lambda d: any(os.path.exists(os.path.join(d, f)) for f in OUTPUT_FILES)  # noqa: E731
    if overwrite or not taken(output_dir):
        return output_dir
    n = 2
    while taken(os.path.join(output_dir, f"run-{n}")):
        n += 1
    return os.path.join(output_dir, f"run-{n}")


def write_prompts(prompts: List[str], path: str, per_line: int = 8) -> None:
    lines = [" ".join(prompts[i : i + per_line]) for i in range(0, len(prompts), per_line)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run(settings: SampleSettings) -> str:
    """Samples as Lesson 6 does; returns the folder written."""
    if settings.num_samples < 1:
        raise ValueError(f"--num_samples must be at least 1, not {settings.num_samples}")
    if settings.dtype not in DTYPE_CHOICES:
        raise ValueError(f"--dtype must be one of {list(DTYPE_CHOICES)}, not {settings.dtype!r}")
    if settings.pipeline and settings.model_checkpoint:
        raise ValueError("pass either --pipeline or --model_checkpoint, not both")
    device = pick_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    pipe = load_pipeline(settings, dtype).to(device)
    output_dir = fresh_output_dir(settings.output_dir, settings.overwrite)
    os.makedirs(output_dir, exist_ok=True)

    generator = torch.Generator().manual_seed(settings.seed)  # on the CPU: the same images on any device
    n = settings.num_samples
    config = pipe.unet.config
    shape = (n, config.in_channels, config.sample_size, config.sample_size)
    common = dict(num_inference_steps=settings.num_inference_steps, eta=settings.eta, output_type="pt",
                  generator=generator)  # fmt: skip
    started = time.perf_counter()

    unconditional = pipe(latents=randn_tensor(shape, generator=generator), batch_size=n, **common).images
    save_grid(unconditional, os.path.join(output_dir, "unconditional_samples.png"))

    if settings.prompts:
        words = settings.prompts.split()
        prompts = [words[i % len(words)] for i in range(n)]
    else:
        prompts = labels_to_prompts(torch.randint(0, 10, (n,), generator=generator).tolist(), generator)
    conditional = None
    if pipe.text_encoder is not None:
        latents = randn_tensor(shape, generator=generator)
        conditional = pipe(prompt=prompts, latents=latents, guidance_scale=settings.guidance_scale, **common).images
        save_grid(conditional, os.path.join(output_dir, "conditional_samples.png"))
        write_prompts(prompts, os.path.join(output_dir, "conditional_sample_prompts.txt"))
    else:
        logger.warning("this pipeline has no text encoder: conditional samples skipped")
    seconds = time.perf_counter() - started

    with open(os.path.join(output_dir, "settings.json"), "w") as f:
        record = {**asdict(settings), "pipeline": settings.pipeline or (None if settings.model_checkpoint else "embedded default"),
                  "device": str(device), "dtype_used": dtype, "scheduler": type(pipe.scheduler).__name__,
                  "sampling_seconds": round(seconds, 1)}  # fmt: skip
        json.dump(record, f, indent=2)
    logger.info("sampled %d + %d images in %.1f s on %s -> %s", n, n if conditional is not None else 0, seconds, device, output_dir)
    return output_dir
