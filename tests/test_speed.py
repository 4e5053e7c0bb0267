"""Speed settings: the main job's dtype choice is made as documented, bf16 stays close to fp32,
and the GPU benchmark suite runs end to end (at toy size, on the CPU)."""

import copy
import json

import pytest
import torch
from conftest import seeded_latents

from pipeline_mnist_ddim.conversion.folders import save_pipeline_folder
from pipeline_mnist_ddim.tools import sample as sample_tool
from pipeline_mnist_ddim.tools.benchmarks import suites as benchmarking
from pipeline_mnist_ddim.tools.commands import benchmark as benchmark_command
from pipeline_mnist_ddim.tools.commands.sample import SampleSettings
from pipeline_mnist_ddim.tools.devices import resolve_dtype


CPU = torch.device("cpu")


@pytest.fixture
def cpu_capabilities(monkeypatch):
    """Pretends this CPU reports exactly the given features."""

    def pretend(**features):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: dict(features))

    return pretend


def test_auto_dtype_is_bfloat16_on_a_cpu_with_native_bf16(cpu_capabilities):
    cpu_capabilities(amx_bf16=True, avx512_bf16=True)
    assert resolve_dtype("auto", CPU) == "bfloat16"
    cpu_capabilities(amx_bf16=False, avx512_bf16=True)  # AVX512-BF16 without AMX is native bf16 too
    assert resolve_dtype("auto", CPU) == "bfloat16"


def test_auto_dtype_is_float32_without_native_bf16_and_on_gpus(cpu_capabilities):
    cpu_capabilities(avx2=True, avx512_f=True, amx_bf16=False, avx512_bf16=False)
    assert resolve_dtype("auto", CPU) == "float32"
    cpu_capabilities(amx_bf16=True)
    assert resolve_dtype("auto", torch.device("cuda")) == "float32"
    assert resolve_dtype("auto", torch.device("mps")) == "float32"


def test_an_explicit_dtype_is_kept(cpu_capabilities):
    cpu_capabilities(amx_bf16=True)
    assert resolve_dtype("float32", CPU) == "float32"
    cpu_capabilities()
    assert resolve_dtype("bfloat16", CPU) == "bfloat16"


def test_main_job_records_the_dtype_it_used(tmp_path, tiny_pipeline, cpu_capabilities, one_thread):
    folder = save_pipeline_folder(tiny_pipeline, str(tmp_path / "pipe"))
    for features, expected in (({"amx_bf16": True}, "bfloat16"), ({}, "float32")):
        cpu_capabilities(**features)
        out = sample_tool.run(
            SampleSettings(
                pipeline=folder,
                output_dir=str(tmp_path / expected),
                num_samples=2,
                num_inference_steps=2,
                device="cpu",
                dtype="auto",
            )
        )
        with open(f"{out}/settings.json") as f:
            record = json.load(f)
        assert record["dtype"] == "auto" and record["dtype_used"] == expected


def test_main_job_samples_in_float32_unless_asked_even_on_a_cpu_with_native_bf16(
    tmp_path, tiny_pipeline, cpu_capabilities, one_thread
):
    # README "Quality in bfloat16": at N = 200 on three seed sets, bf16 weights scored a higher
    # Frechet distance than float32 in all six paired comparisons, so bf16 is opt-in (--dtype auto).
    from pipeline_mnist_ddim.tools.commands import sample as sample_command

    folder = save_pipeline_folder(tiny_pipeline, str(tmp_path / "pipe"))
    cpu_capabilities(amx_bf16=True, avx512_bf16=True)  # where --dtype auto picks bfloat16
    output = tmp_path / "samples"
    arguments = ["--pipeline", folder, "--output_dir", str(output), "--num_samples", "2", "--num_inference_steps", "2"]
    assert sample_command.main([*arguments, "--device", "cpu"]) == 0
    record = json.loads((output / "settings.json").read_text())
    assert record["dtype"] == "float32" and record["dtype_used"] == "float32"


def test_bfloat16_weights_sample_close_to_float32(tiny_pipeline, one_thread):
    """bf16 weights, float32 latents (what --dtype auto picks on AMX CPUs): 5 steps on the tiny model."""
    prompts = ["0", "seven", "3", "nine"]

    def sample(latents):
        return tiny_pipeline(prompt=prompts, latents=latents, num_inference_steps=5, output_type="pt").images

    float32, other_seed = sample(seeded_latents(4)), sample(seeded_latents(4, seed=1))
    tiny_pipeline.unet = copy.deepcopy(tiny_pipeline.unet).to(torch.bfloat16)
    tiny_pipeline.text_encoder = copy.deepcopy(tiny_pipeline.text_encoder).to(torch.bfloat16)
    bfloat16 = sample(seeded_latents(4))
    assert bfloat16.dtype == torch.float32
    # Pixels in [0, 1]. Measured: mean 0.0022 (max 0.25 on a few pixels of this random-weight
    # model, which amplifies differences), against 0.50 between two seeds.
    difference = (bfloat16 - float32).abs().mean()
    assert difference < 0.01 and difference < 0.02 * (other_seed - float32).abs().mean()


def test_gpu_suite_runs_end_to_end_at_toy_size(tmp_path, one_thread):
    path = tmp_path / "suite.json"
    benchmark_command.main(["--suite", "gpu", "--tiny", "--device", "cpu", "--json", str(path)])
    result = json.loads(path.read_text())
    rows = {row["variant"]: row for row in result["rows"]}
    expected = [v.name for v in benchmarking.gpu_variants("bfloat16", [], ["float32", "bfloat16"])]
    assert list(rows) == expected
    assert not [name for name, row in rows.items() if "error" in row]
    assert all(row["finite"] and row["seconds"] > 0 and row["warmup_seconds"] > 0 for row in rows.values())
    # The same weights: the lesson's loop and the pipeline agree in float32, SDPA or not.
    assert rows["reference, float32"]["max_abs_diff_vs_pipeline_float32"] < 1e-3
    assert rows["pipeline, float32, classic attention"]["max_abs_diff_vs_pipeline_float32"] < 1e-4
    assert rows["pipeline, bfloat16, SDPA"]["max_abs_diff_vs_pipeline_float32"] < 0.1
    assert result["settings"]["batch_size"] == 2 and result["settings"]["num_inference_steps"] == 2
    assert all(name in result["table"] for name in expected)


@pytest.mark.slow
def test_compiled_training_step_matches_eager_and_keeps_the_lesson_keys(tmp_path, one_thread):
    """--compile wraps the network in place; traced with aot_eager (no code generation) for CI speed."""
    import numpy as np
    from torch._dynamo.utils import counters

    from pipeline_mnist_ddim.tools.training import TrainSettings, train

    rng = np.random.default_rng(0)
    dataset = tmp_path / "digits.npz"
    np.savez(dataset, images=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), labels=np.arange(20) % 10)
    weights = {}
    counters.clear()
    for compiled in (False, True):
        config = TrainSettings(
            output_dir=str(tmp_path / f"compiled-{compiled}"),
            dataset=str(dataset),
            base_channels=32,
            num_training_steps=2,
            batch_size=4,
            dropout=0.0,
            save_every=2,
            sample_every=0,
            compile=compiled,
            compile_backend="aot_eager",
        )
        weights[compiled] = torch.load(train(config), weights_only=True)["model_state_dict"]
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did capture the network
    assert list(weights[True]) == list(weights[False])  # no "_orig_mod." in the checkpoint
    difference = max((weights[True][k].float() - weights[False][k].float()).abs().max().item() for k in weights[False])
    # Two Adam steps move a weight by up to 2 x lr = 4e-4. Adam divides each gradient by its own
    # size, so where a gradient is near zero, compiled vs eager rounding shows at a fraction of a
    # step (1.5e-5 seen); a wrong graph would be off by whole steps.
    assert difference < 5e-5
