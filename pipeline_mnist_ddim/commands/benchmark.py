r"""Benchmark: the diffusers pipeline vs the reference Lesson 6 loop, same weights, same run.

    mnist-ddim-benchmark                                 # full size (base 128, context 768), 50 steps
    mnist-ddim-benchmark --batch_size 64 --device cuda

(or python scripts/benchmark.py ...). Prints seconds and images/s of each and their ratio, in float32 and in the reduced
precision the device has (bfloat16 autocast on CPU, float16 + SDPA on CUDA), and the
machine. Not a test: numbers depend on the machine; only same-run ratios compare.
"""

import contextlib
import platform
import sys
import time

from ..cli import USER_ERRORS, parse_settings, report
from ..settings import BenchmarkOptions


def timed(fn, device, repeats: int) -> float:
    fn()  # warm-up: kernels, allocator, oneDNN primitives
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def describe(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def parse_args(argv=None) -> BenchmarkOptions:
    (options,) = parse_settings([BenchmarkOptions], argv, description=__doc__)
    return options


def main(argv=None) -> int:
    options = parse_args(argv)
    try:
        benchmark(options)
    except USER_ERRORS as err:  # a bad --device, sizes the network refuses
        return report(err)
    return 0


def benchmark(args: BenchmarkOptions) -> None:
    import torch
    from diffusers.utils import logging as diffusers_logging

    from ..conversion import strip_prefixes, unet_from_lesson_state_dict
    from ..devices import pick_device
    from ..pipeline_mnist_ddim import MNistDDIMPipeline
    from ..reference import LessonUNet, ddim_sample
    from ..schedulers import lesson_ddim_scheduler

    diffusers_logging.set_verbosity_error()  # .to(dtype) on a UNet logs a harmless note each time
    device = pick_device(args.device)
    if min(args.batch_size or 1, args.num_inference_steps, args.repeats) < 1:
        raise ValueError("--batch_size, --num_inference_steps and --repeats must be positive")
    batch = args.batch_size or (64 if device.type == "cuda" else 8)

    torch.manual_seed(args.seed)
    reference = LessonUNet(args.base_channels, context_dim=args.context_dim).eval()
    unet = unet_from_lesson_state_dict(strip_prefixes(reference.state_dict()))
    pipe = MNistDDIMPipeline(unet=unet, scheduler=lesson_ddim_scheduler())
    pipe.set_progress_bar_config(disable=True)
    reference.to(device)
    pipe.to(device)
    x_t = torch.randn(batch, 1, 32, 32, device=device)
    zeros = torch.zeros(batch, args.context_dim, device=device)  # the lesson's unconditional context
    steps = args.num_inference_steps

    print(f"device: {describe(device)}; base {args.base_channels}, context {args.context_dim}, "
          f"batch {batch}, {steps} DDIM steps")  # fmt: skip
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
                pipe_s = timed(lambda: pipe(latents=x_t, batch_size=batch, num_inference_steps=steps, output_type="pt"),
                               device, args.repeats)  # fmt: skip
        print(f"{name:>9}: reference {ref_s:7.2f} s ({batch / ref_s:7.1f} img/s) | pipeline {pipe_s:7.2f} s "
              f"({batch / pipe_s:7.1f} img/s) | pipeline speed-up x{ref_s / pipe_s:.2f}")  # fmt: skip
        pipe.unet.to(torch.float32)


if __name__ == "__main__":
    sys.exit(main())
