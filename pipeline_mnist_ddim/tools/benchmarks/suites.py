"""The benchmark's timing loops (``mnist-ddim-benchmark``, pipeline_mnist_ddim/tools/commands/benchmark.py parses its flags).

The default suite times the pipeline against the reference Lesson 6 loop, same weights, same run;
``--suite gpu`` times every GPU variant in one process (docs/gpu_benchmark.md); ``--suite
cpu_engines`` is in engine_benchmark.py.
"""

import contextlib
import copy
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import List, Optional

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from diffusers.utils import logging as diffusers_logging

from pipeline_mnist_ddim.conversion.checkpoint import strip_prefixes, unet_from_lesson_state_dict
from pipeline_mnist_ddim.conversion.files import atomic_path
from pipeline_mnist_ddim.lesson.reference import LessonUNet, ddim_sample
from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
from pipeline_mnist_ddim.tools.commands.benchmark import BenchmarkSettings
from pipeline_mnist_ddim.tools.devices import DTYPES, pick_device


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: kernels, allocator, oneDNN primitives
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"
    )


# ---------------------------------------------------------------------------- the GPU suite


@dataclass
class Variant:
    """One row: which loop, in which precision, with which kernels."""

    loop: str  # "reference" (Lesson 6's loop, autocast for half precision) or "pipeline" (half weights)
    dtype: str = "float32"
    sdpa: bool = True  # pipeline: diffusers' SDPA processor (else the classic matmul-softmax one)
    channels_last: bool = False
    compile_mode: Optional[str] = None  # torch.compile mode of the UNet, e.g. "reduce-overhead"
    guidance_scale: float = 1.0  # > 1: classifier-free guidance, the UNet sees 2x the batch

    @property
    def name(self) -> str:
        parts = [self.loop, self.dtype]
        if self.loop == "reference" and self.dtype != "float32":
            parts[-1] += " autocast"
        if self.loop == "pipeline":
            parts.append("SDPA" if self.sdpa else "classic attention")
        if self.channels_last:
            parts.append("channels-last")
        if self.compile_mode:
            parts.append(f"compile {self.compile_mode}")
        if self.guidance_scale > 1:
            parts.append(f"CFG {self.guidance_scale:g}")
        return ", ".join(parts)


def gpu_variants(half: str, compile_modes: List[str], dtypes: List[str]) -> List[Variant]:
    """The rows, cheapest first so that a run cut short still has the basics; ``half`` gets the extras."""
    rows = [Variant("reference", d) for d in dtypes]
    rows += [Variant("pipeline", d) for d in dtypes]
    rows += [Variant("pipeline", "float32", sdpa=False), Variant("pipeline", half, sdpa=False)]
    rows += [Variant("pipeline", half, channels_last=True), Variant("pipeline", half, guidance_scale=2.0)]
    for mode in compile_modes:
        rows += [
            Variant("pipeline", half, compile_mode=mode),
            Variant("pipeline", half, compile_mode=mode, guidance_scale=2.0),
        ]
    return rows


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(variant: Variant, reference, unet, scheduler_config, x_t, context, steps, repeats, warmups):
    """Times one variant; returns its row (seconds are medians over ``repeats``) and its images."""
    device = x_t.device
    dtype = DTYPES[variant.dtype]
    if variant.loop == "reference":
        model = reference.to(memory_format=torch.channels_last if variant.channels_last else torch.contiguous_format)
        if variant.compile_mode:
            model = torch.compile(model, mode=variant.compile_mode)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

        def sample():
            with autocast:  # clamped as the pipeline's output (and the lesson's saved grid)
                return ddim_sample(model, x_t, context, steps).clamp(0, 1)

    else:
        # A copy per variant: casting the float32 weights to half and back would round them.
        unet = copy.deepcopy(unet).to(dtype=dtype)
        if variant.channels_last:
            unet.to(memory_format=torch.channels_last)
        unet.set_attn_processor(AttnProcessor2_0() if variant.sdpa else AttnProcessor())
        pipe = MNISTDDIMPipeline(unet=unet, scheduler=lesson_ddim_scheduler())
        pipe.scheduler = type(pipe.scheduler).from_config(scheduler_config)
        pipe.set_progress_bar_config(disable=True)
        if variant.compile_mode:
            pipe.unet = torch.compile(unet, mode=variant.compile_mode)

        def sample():
            return pipe(
                latents=x_t,
                prompt_embeds=context,
                guidance_scale=variant.guidance_scale,
                num_inference_steps=steps,
                output_type="pt",
            ).images

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        synchronize(device)
        started = time.perf_counter()
        for _ in range(warmups):  # kernels, autotuning, compilation, CUDA-graph recording
            images = sample()
        synchronize(device)
        warmup_s = time.perf_counter() - started
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            images = sample()
            synchronize(device)
            seconds.append(time.perf_counter() - started)
    row = {
        "variant": variant.name,
        **asdict(variant),
        "seconds": statistics.median(seconds),
        "all_seconds": seconds,
        "warmup_seconds": warmup_s,
        "images_per_second": x_t.shape[0] / statistics.median(seconds),
    }
    if device.type == "cuda":
        row["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row, images.float().cpu()


def machine(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "device": describe(device), "python": platform.python_version()}
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def markdown_table(rows: List[dict], baseline: Optional[float]) -> str:
    lines = [
        "| variant | seconds | images/s | vs reference float32 | warm-up s | max abs diff vs pipeline float32 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['variant']} | failed: {row['error'][:80]} | | | | |")
            continue
        speed_up = f"x{baseline / row['seconds']:.2f}" if baseline else ""
        diff = row.get("max_abs_diff_vs_pipeline_float32")
        lines.append(
            f"| {row['variant']} | {row['seconds']:.3f} | {row['images_per_second']:.1f} | {speed_up} | "
            f"{row['warmup_seconds']:.1f} | {'' if diff is None else f'{diff:.2e}'} |"
        )
    return "\n".join(lines)


def gpu_suite(args: BenchmarkSettings, device: torch.device) -> dict:
    """Every variant in one process on the same weights, latents and contexts; writes JSON after each row."""
    if args.tiny:  # a toy size that runs on any CPU in seconds: proves the suite end to end
        args.base_channels, args.cross_attention_dim, args.batch_size, args.num_inference_steps = 32, 32, 2, 2
        args.context_tokens, args.repeats = 4, 1
    batch = args.batch_size or 64
    dtypes = args.dtypes or (["float32", "float16", "bfloat16"] if device.type == "cuda" else ["float32", "bfloat16"])
    half = args.half_dtype or ("float16" if device.type == "cuda" else "bfloat16")
    compile_modes = (
        [m for m in args.compile_modes if m != "none"]
        if args.compile_modes is not None
        else (["reduce-overhead", "max-autotune"] if device.type == "cuda" else [])
    )

    torch.manual_seed(args.seed)
    reference = LessonUNet(args.base_channels, context_dim=args.cross_attention_dim).eval()
    unet = unet_from_lesson_state_dict(strip_prefixes(reference.state_dict())).eval()
    reference.to(device)
    unet.to(device)
    scheduler_config = lesson_ddim_scheduler().config
    generator = torch.Generator().manual_seed(args.seed)
    x_t = torch.randn(batch, 1, 32, 32, generator=generator).to(device)
    context = torch.randn(batch, args.context_tokens, args.cross_attention_dim, generator=generator).to(device)
    result = {
        "machine": machine(device),
        "settings": {
            "base_channels": args.base_channels,
            "cross_attention_dim": args.cross_attention_dim,
            "batch_size": batch,
            "context_tokens": args.context_tokens,
            "num_inference_steps": args.num_inference_steps,
            "repeats": args.repeats,
            "warmups": args.warmups,
        },
        "rows": [],
    }
    print(f"machine: {result['machine']}\nsettings: {result['settings']}", flush=True)
    images_of = {}
    for variant in gpu_variants(half, compile_modes, dtypes):
        if variant.loop == "reference" and variant.dtype not in dtypes:
            continue
        torch._dynamo.reset()  # each compiled variant compiles afresh; its warm-up shows the cost
        warmups = args.warmups + (1 if variant.compile_mode else 0)  # CUDA graphs record on the 2nd call
        try:
            row, images = run_variant(
                variant,
                reference,
                unet,
                scheduler_config,
                x_t,
                context,
                args.num_inference_steps,
                args.repeats,
                warmups,
            )
        except Exception as err:  # one failing mode (say a compiler error) must not lose the other rows
            row, images = {"variant": variant.name, **asdict(variant), "error": f"{type(err).__name__}: {err}"}, None
        if images is not None:
            images_of[variant.name] = images
            row["finite"] = bool(torch.isfinite(images).all())
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            write_json(result, args.json)
    pipeline_float32 = images_of.get(Variant("pipeline").name)
    for row in result["rows"]:
        if pipeline_float32 is not None and row["variant"] in images_of:
            row["max_abs_diff_vs_pipeline_float32"] = (images_of[row["variant"]] - pipeline_float32).abs().max().item()
    baseline = next(
        (r["seconds"] for r in result["rows"] if r["variant"] == Variant("reference").name and "seconds" in r), None
    )
    for row in result["rows"]:
        if baseline and "seconds" in row:
            row["speed_up_vs_reference_float32"] = baseline / row["seconds"]
    result["table"] = markdown_table(result["rows"], baseline)
    if args.json:
        write_json(result, args.json)
    print(result["table"])
    return result


def write_json(result: dict, path: str) -> None:
    with atomic_path(path) as temporary, open(temporary, "w") as f:
        json.dump(result, f, indent=2)


def benchmark(args: BenchmarkSettings) -> None:
    diffusers_logging.set_verbosity_error()  # .to(dtype) on a UNet logs a harmless note each time
    device = pick_device(args.device)
    args.repeats = args.repeats or {"gpu": 3, "cpu_engines": 5}.get(args.suite, 1)
    if args.suite == "gpu":
        gpu_suite(args, device)
        return
    if args.suite == "cpu_engines":
        from pipeline_mnist_ddim.tools.benchmarks.cpu_engines import cpu_engines_suite

        result = cpu_engines_suite(args)
        if args.json:
            write_json(result, args.json)
        return
    batch = args.batch_size or (64 if device.type == "cuda" else 8)

    torch.manual_seed(args.seed)
    reference = LessonUNet(args.base_channels, context_dim=args.cross_attention_dim).eval()
    unet = unet_from_lesson_state_dict(strip_prefixes(reference.state_dict()))
    pipe = MNISTDDIMPipeline(unet=unet, scheduler=lesson_ddim_scheduler())
    pipe.set_progress_bar_config(disable=True)
    reference.to(device)
    pipe.to(device)
    x_t = torch.randn(batch, 1, 32, 32, device=device)
    zeros = torch.zeros(batch, args.cross_attention_dim, device=device)  # the lesson's unconditional context
    steps = args.num_inference_steps

    print(
        f"device: {describe(device)}; base {args.base_channels}, context {args.cross_attention_dim}, "
        f"batch {batch}, {steps} DDIM steps"
    )
    low = torch.bfloat16 if device.type == "cpu" else torch.float16
    variants = [("float32", None)] + [(str(low).replace("torch.", ""), low)]
    for name, dtype in variants:
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        if device.type == "cuda" and dtype is not None:
            pipe.unet.to(dtype)  # half weights; the pipeline keeps its latents in float32
            pipe_context = contextlib.nullcontext()
        else:
            pipe_context = autocast
        with torch.no_grad():
            with autocast:
                ref_s = timed(lambda: ddim_sample(reference, x_t, zeros, steps), device, args.repeats)
            with pipe_context:
                pipe_s = timed(
                    lambda: pipe(latents=x_t, batch_size=batch, num_inference_steps=steps, output_type="pt"),
                    device,
                    args.repeats,
                )
        print(
            f"{name:>9}: reference {ref_s:7.2f} s ({batch / ref_s:7.1f} img/s) | pipeline {pipe_s:7.2f} s "
            f"({batch / pipe_s:7.1f} img/s) | pipeline speed-up x{ref_s / pipe_s:.2f}"
        )
        pipe.unet.to(torch.float32)
