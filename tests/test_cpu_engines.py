"""The CPU-engine benchmark (``--suite cpu_engines``): without its optional packages it refuses in one line."""

import importlib.util

import torch

from pipeline_mnist_ddim.tools.benchmarks import cpu_engines as engine_benchmark
from pipeline_mnist_ddim.tools.commands import benchmark as benchmark_command


def test_cpu_engines_suite_without_the_engines_names_the_packages_to_install(monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    hidden = engine_benchmark.ENGINE_PACKAGES  # as on CI, which installs none of them
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else find_spec(name, *a))
    assert benchmark_command.main(["--suite", "cpu_engines"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --suite cpu_engines needs")
    assert "pip install onnxruntime openvino onnx onnxscript" in lines[0]


def small_step_inputs(width: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "sample": torch.randn(3, 1, 32, 32, generator=generator),
        "timestep": torch.tensor(500),
        "unconditional": torch.zeros(3, 1, width),  # the pipeline's zero context
        "prompted": torch.randn(3, 5, width, generator=generator),
    }


def test_one_batch_of_both_halves_predicts_what_two_batches_do(tiny_unet, one_thread):
    """The suite's "one batch of 128" repeats the zero context to the prompts' token count:
    attention over identical tokens is the same at any count (measured 0.0 on the default)."""
    inputs = small_step_inputs(tiny_unet.config.cross_attention_dim)
    two_batches = engine_benchmark.torch_runner(tiny_unet, inputs)()
    one_batch = engine_benchmark.torch_runner(tiny_unet, inputs, one_batch=True)()
    assert one_batch[0].shape == two_batches[0].shape == (3, 1, 32, 32)
    assert engine_benchmark.max_abs_difference(one_batch, two_batches) < 1e-5
    # and the halves are not swapped: the prompted prediction differs from the unconditional one
    assert (two_batches[0] - two_batches[1]).abs().max() > 1e-3


def test_channels_last_and_bfloat16_runners_stay_close_to_float32(tiny_unet, one_thread):
    inputs = small_step_inputs(tiny_unet.config.cross_attention_dim)
    float32 = engine_benchmark.torch_runner(tiny_unet, inputs)()
    channels_last = engine_benchmark.torch_runner(tiny_unet, inputs, channels_last=True)()
    bfloat16 = engine_benchmark.torch_runner(tiny_unet, inputs, torch.bfloat16)()
    assert all(t.dtype == torch.float32 for t in channels_last + bfloat16)  # predictions back in float32
    assert engine_benchmark.max_abs_difference(channels_last, float32) < 1e-4  # 4.8e-6 on the default
    assert 0 < engine_benchmark.max_abs_difference(bfloat16, float32) < 0.1  # 2.3e-2 on the default
    assert tiny_unet.dtype == torch.float32  # the runners cast copies, never the shared model
