"""Benchmark: the diffusers pipeline vs the reference Lesson 6 loop, same weights, same run.

    mnist-ddim-benchmark                          # full size (base 128, cross-attention width 768), 50 steps
    mnist-ddim-benchmark --batch_size 64 --device cuda
    mnist-ddim-benchmark --suite gpu --json out.json   # every GPU variant, one table + JSON
    mnist-ddim-benchmark --suite gpu --tiny --device cpu   # the same suite at toy size (a test runs it)
    mnist-ddim-benchmark --suite cpu_engines --json out.json   # PyTorch vs ONNX Runtime vs OpenVINO on this CPU

(or python scripts/benchmark.py ...). The default suite prints seconds and images/s of each and
their ratio, in float32 and in the reduced precision the device has (bfloat16 autocast on CPU,
float16 + SDPA on CUDA), and the machine. ``--suite gpu`` times, in one process, the reference
loop (float32, float16/bfloat16 autocast) and the pipeline in float32/float16/bfloat16 with SDPA
or the classic attention, channels-last, ``torch.compile`` modes and classifier-free guidance
on/off; warm-up runs (compilation included) are timed apart and excluded, timings are
synchronised, and each row records its largest difference from the float32 pipeline's images.
See docs/gpu_benchmark.md. ``--suite cpu_engines`` times one step of the main job with the
embedded default's UNet in PyTorch (float32, bf16 weights, channels-last, one batch of 128),
ONNX Runtime and OpenVINO, and 2 threads in one process against two 1-thread processes
(pipeline_mnist_ddim/tools/benchmarks/cpu_engines.py; needs ``pip install onnxruntime openvino onnx onnxscript``).
Not a test: numbers depend on the machine; only same-run ratios compare.
"""

import sys
from dataclasses import dataclass
from typing import List, Literal, Optional

from pipeline_mnist_ddim.tools.arguments import (
    DEVICE_HELP,
    DTYPE_NAMES,
    PIPELINE_HELP,
    at_least,
    check_seed,
    check_steps,
    option,
)
from pipeline_mnist_ddim.tools.cli import USER_ERRORS, parse_settings, quiet_on_ctrl_c, report


@dataclass
class BenchmarkSettings:
    """What ``mnist-ddim-benchmark`` times and at which sizes."""

    suite: Literal["compare", "gpu", "cpu_engines"] = option(
        "compare",
        "compare: pipeline vs reference loop in float32 and the device's reduced precision; gpu: every GPU variant; "
        "cpu_engines: the default's UNet in PyTorch, ONNX Runtime and OpenVINO, and thread layouts (CPU)",
    )
    device: str = option("auto", DEVICE_HELP)
    batch_size: Optional[int] = option(None, "images per call (None: 64 on CUDA or with --suite gpu, 8 on CPU)")
    num_inference_steps: int = option(50, "DDIM steps")
    base_channels: int = option(128, "UNet width")
    cross_attention_dim: int = option(768, "text-embedding width (the UNet's cross_attention_dim)")
    repeats: Optional[int] = option(None, "timed runs per variant (None: 1; 3 for --suite gpu, 5 for cpu_engines)")
    seed: int = option(0, "seed of the random weights, latents and contexts")
    # --suite gpu only
    tiny: bool = option(
        False, "--suite gpu: toy sizes (base 32, cross-attention width 32, batch 2, 2 steps, 1 repeat)"
    )
    context_tokens: int = option(77, "--suite gpu: prompt tokens (CLIP's 77)")
    warmups: int = option(1, "--suite gpu: untimed runs per variant (+1 when compiled)")
    dtypes: Optional[List[str]] = option(
        None,
        "--suite gpu: dtypes of the plain rows (None: all three on CUDA, float32 and bfloat16 elsewhere)",
        choices=DTYPE_NAMES,
    )
    half_dtype: Optional[Literal["float16", "bfloat16"]] = option(
        None, "--suite gpu: dtype of the extra rows (None: float16 on CUDA, else bfloat16)"
    )
    compile_modes: Optional[List[str]] = option(
        None,
        '--suite gpu: torch.compile modes, "none" for none (None: '
        '"reduce-overhead" "max-autotune" on CUDA, none elsewhere)',
    )
    json: Optional[str] = option(
        None, "--suite gpu: write the results here (after every row, so a cut-short run keeps them); cpu_engines too"
    )
    # --suite cpu_engines only (--repeats: interleaved rounds, None: 5)
    pipeline: Optional[str] = option(None, "--suite cpu_engines: " + PIPELINE_HELP)
    num_threads: Optional[int] = option(None, "--suite cpu_engines: torch threads of one process (None: all CPUs)")
    thread_layout_steps: int = option(2, "--suite cpu_engines: main-job steps per thread-layout timing")

    def validate(self) -> None:
        """What needs no torch, checked before importing it: a ValueError naming the flag."""
        for flag in ("batch_size", "repeats", "num_threads"):  # None: the suite's default
            if getattr(self, flag) is not None:
                setattr(self, flag, at_least(getattr(self, flag), f"--{flag}", 1))
        self.num_inference_steps = check_steps(self.num_inference_steps)
        for flag in ("thread_layout_steps", "cross_attention_dim", "context_tokens"):
            setattr(self, flag, at_least(getattr(self, flag), f"--{flag}", 1))
        self.warmups = at_least(self.warmups, "--warmups", 0)
        self.seed = check_seed(self.seed)


def parse_args(argv=None) -> BenchmarkSettings:
    (settings,) = parse_settings([BenchmarkSettings], argv, description=__doc__)
    return settings


@quiet_on_ctrl_c
def main(argv=None) -> int:
    settings = parse_args(argv)
    try:
        settings.validate()  # before importing torch
        from pipeline_mnist_ddim.tools.benchmarks.suites import benchmark

        benchmark(settings)
    except USER_ERRORS as err:  # bad sizes, a bad --device, sizes the network refuses
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
