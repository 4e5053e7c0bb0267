"""The CPU-engine benchmark (``--suite cpu_engines``): without its optional packages it refuses in one line."""

import importlib.util

from pipeline_mnist_ddim import engine_benchmark
from pipeline_mnist_ddim.commands import benchmark as benchmark_command


def test_cpu_engines_suite_without_the_engines_names_the_packages_to_install(monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    hidden = engine_benchmark.ENGINE_PACKAGES  # as on CI, which installs none of them
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else find_spec(name, *a))
    assert benchmark_command.main(["--suite", "cpu_engines"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --suite cpu_engines needs")
    assert "pip install onnxruntime openvino onnx onnxscript" in lines[0]
