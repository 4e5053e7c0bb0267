"""Benchmark: the diffusers pipeline vs the reference Lesson 6 loop, same weights, same run.

    mnist-ddim-benchmark                          # full size (base 128, context 768), 50 steps
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

from pipeline_mnist_ddim.tools.cli import USER_ERRORS, parse_settings, quiet_on_ctrl_c, report
from pipeline_mnist_ddim.tools.settings import BenchmarkOptions


def parse_args(argv=None) -> BenchmarkOptions:
    (options,) = parse_settings([BenchmarkOptions], argv, description=__doc__)
    return options


@quiet_on_ctrl_c
def main(argv=None) -> int:
    options = parse_args(argv)
    try:
        from pipeline_mnist_ddim.tools.benchmarks.suites import benchmark

        benchmark(options)
    except USER_ERRORS as err:  # a bad --device, sizes the network refuses
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
