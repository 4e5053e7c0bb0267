"""``--suite cpu_engines``: the embedded default's UNet on this CPU in PyTorch, ONNX Runtime and OpenVINO.

One process times, in interleaved rounds, one step of the main job (a batch of 64 unconditional
images with the zero context and a batch of 64 prompted ones: 128 UNet evaluations) in every
variant, on the same weights and inputs, and records each variant's largest difference from
PyTorch float32 and its one-off export and compile time. Then it times the thread layouts: one
process with all threads against two 1-thread processes each doing one half, in parallel.
Only ratios of variants timed in the same run compare: other jobs on the machine move the seconds.

The engines are optional (``pip install onnxruntime openvino onnx onnxscript``); without them the
suite refuses with one line naming what to install.
"""

import copy
import importlib.util
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import torch

from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder
from pipeline_mnist_ddim.lesson import labels_to_prompts
from pipeline_mnist_ddim.tools.benchmarks.thread_layouts import one_process_name, quiet, time_thread_layouts


ENGINE_PACKAGES = ("onnxruntime", "openvino", "onnx", "onnxscript")  # onnx + onnxscript: torch's ONNX exporter
CPU_FLAGS_OF_NOTE = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
BATCH = 64  # the main job's batch per pipeline call

Outputs = Tuple[torch.Tensor, torch.Tensor]  # noise predictions for the unconditional and the prompted batch


def check_engines_installed() -> None:
    missing = [name for name in ENGINE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(
            f"--suite cpu_engines needs {', '.join(missing)}, which are not installed: "
            f"pip install {' '.join(missing)} (in a virtual environment if you keep this one unchanged)"
        )


# ---------------------------------------------------------------------------- inputs and machine


class NoisePrediction(torch.nn.Module):
    """The UNet as a function of tensors only: what the exporters trace."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


def main_job_inputs(pipe, seed: int) -> Dict[str, torch.Tensor]:
    """One DDIM step of the main job: latents, a mid-trajectory timestep and both contexts."""
    generator = torch.Generator().manual_seed(seed)
    config = pipe.unet.config
    labels = torch.randint(0, 10, (BATCH,), generator=generator).tolist()
    with torch.no_grad():
        prompted, _ = pipe.encode_prompt(labels_to_prompts(labels, generator), torch.device("cpu"), 1, False)
    pipe.scheduler.set_timesteps(50)
    return {
        "sample": torch.randn(BATCH, config.in_channels, config.sample_size, config.sample_size, generator=generator),
        # a 0-d int64 tensor, as the pipeline passes the scheduler's timestep
        "timestep": pipe.scheduler.timesteps[25].clone(),
        "unconditional": torch.zeros(BATCH, 1, config.cross_attention_dim),  # the pipeline's zero context
        "prompted": prompted.float(),
    }


def machine() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:  # not Linux: the model name from platform only
        pass
    import onnxruntime
    import openvino

    return {
        "cpu": model,
        "cpu_flags_of_note": [flag for flag in CPU_FLAGS_OF_NOTE if flag in flags],
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------- the variants


def torch_runner(unet, inputs, dtype=torch.float32, channels_last=False, one_batch=False) -> Callable[[], Outputs]:
    """PyTorch, as the pipeline calls it: inputs cast to the weights' dtype, predictions back to float32."""
    unet = copy.deepcopy(unet).to(dtype)  # a copy: casting the float32 weights to bf16 and back would round them
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    unet.to(memory_format=memory_format)
    sample = inputs["sample"].to(dtype).contiguous(memory_format=memory_format)
    unconditional, prompted = inputs["unconditional"].to(dtype), inputs["prompted"].to(dtype)
    t = inputs["timestep"]
    if one_batch:
        # The zero context repeated to the prompts' token count: attention over identical tokens
        # averages identical values, the same at any count, so both halves fit in one batch of 128.
        both_contexts = torch.cat([unconditional.expand(-1, prompted.shape[1], -1), prompted])
        both_samples = torch.cat([sample, sample])

    def run() -> Outputs:
        with torch.no_grad():
            if one_batch:
                return unet(both_samples, t, encoder_hidden_states=both_contexts).sample.float().chunk(2)
            return (
                unet(sample, t, encoder_hidden_states=unconditional).sample.float(),
                unet(sample, t, encoder_hidden_states=prompted).sample.float(),
            )

    return run


def export_onnx(unet, inputs, folder: str) -> str:
    path = os.path.join(folder, "unet.onnx")
    batch, tokens = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("tokens", min=1, max=77)
    torch.onnx.export(
        NoisePrediction(unet).eval(),
        (inputs["sample"], inputs["timestep"], inputs["prompted"]),
        path,
        dynamo=True,
        input_names=["sample", "timestep", "encoder_hidden_states"],
        output_names=["noise_pred"],
        dynamic_shapes={"sample": {0: batch}, "timestep": None, "encoder_hidden_states": {0: batch, 1: tokens}},
    )
    return path


def engine_feeds(inputs) -> List[Dict[str, object]]:
    common = {"sample": inputs["sample"].numpy(), "timestep": inputs["timestep"].numpy()}
    return [{**common, "encoder_hidden_states": inputs[key].numpy()} for key in ("unconditional", "prompted")]


def onnxruntime_runner(onnx_path: str, inputs, intra_op_threads: int = 0) -> Callable[[], Outputs]:
    import onnxruntime

    options = onnxruntime.SessionOptions()  # defaults: all graph optimisations, one thread a physical core
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    session = onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    feeds = engine_feeds(inputs)
    return lambda: tuple(torch.from_numpy(session.run(None, feed)[0]) for feed in feeds)


def openvino_runner(compiled, inputs) -> Callable[[], Outputs]:
    request = compiled.create_infer_request()
    feeds = engine_feeds(inputs)

    def run() -> Outputs:
        # copied out: the request reuses its output buffer on the next call
        return tuple(torch.from_numpy(request.infer(feed)[0].copy()) for feed in feeds)

    return run


def build_variants(
    unet, inputs, folder: str, threads: int, pin_engine_threads: bool
) -> Tuple[Dict[str, Callable[[], Outputs]], dict]:
    """Every variant's runner, and the one-off costs (seconds) of exporting and compiling.

    ``pin_engine_threads``: OpenVINO also gets ``threads`` (else its default, one per core).
    """
    import openvino

    one_off = {}
    variants = {
        "torch float32": torch_runner(unet, inputs),
        "torch float32, channels-last": torch_runner(unet, inputs, channels_last=True),
        "torch float32, one batch of 128": torch_runner(unet, inputs, one_batch=True),
        "torch bfloat16 weights": torch_runner(unet, inputs, torch.bfloat16),
        "torch bfloat16 weights, channels-last": torch_runner(unet, inputs, torch.bfloat16, channels_last=True),
        "torch bfloat16 weights, one batch of 128": torch_runner(unet, inputs, torch.bfloat16, one_batch=True),
    }

    started = time.perf_counter()
    onnx_path = export_onnx(unet, inputs, folder)
    one_off["torch.onnx.export (dynamo)"] = time.perf_counter() - started
    for name, intra_op_threads in (("default options", 0), (f"intra_op_num_threads={threads}", threads)):
        started = time.perf_counter()
        variants[f"ONNX Runtime float32, {name}"] = onnxruntime_runner(onnx_path, inputs, intra_op_threads)
        one_off[f"ONNX Runtime session, {name}"] = time.perf_counter() - started

    core = openvino.Core()
    started = time.perf_counter()
    model = openvino.convert_model(
        NoisePrediction(unet).eval(), example_input=(inputs["sample"], inputs["timestep"], inputs["prompted"])
    )
    one_off["openvino.convert_model (from torch)"] = time.perf_counter() - started
    default_precision = core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()  # bf16 on AMX
    pinned = {"INFERENCE_NUM_THREADS": threads} if pin_engine_threads else {}
    for name, config in (
        ("INFERENCE_PRECISION_HINT f32", {"INFERENCE_PRECISION_HINT": "f32"}),
        (f"default precision ({default_precision})", {}),
    ):
        if pinned:
            name += f", {threads} threads"
        started = time.perf_counter()
        compiled = core.compile_model(model, "CPU", {**config, **pinned})
        one_off[f"OpenVINO compile, {name}"] = time.perf_counter() - started
        variants[f"OpenVINO, {name}"] = openvino_runner(compiled, inputs)
    return variants, one_off


def max_abs_difference(outputs: Outputs, reference: Outputs) -> float:
    return max((a.float() - b).abs().max().item() for a, b in zip(outputs, reference))


def time_interleaved(variants: Dict[str, Callable[[], Outputs]], rounds: int) -> Tuple[Dict[str, List[float]], dict]:
    """Seconds of each variant in each round (after one untimed warm-up call each), and its outputs."""
    outputs = {name: run() for name, run in variants.items()}  # warm-up: kernels, primitives, shape caches
    seconds = {name: [] for name in variants}
    for round_index in range(rounds):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
        print(f"round {round_index + 1}/{rounds}: load average {os.getloadavg()[0]:.2f}", flush=True)
    return seconds, outputs


# ---------------------------------------------------------------------------- the suite


def summarize(seconds: Dict[str, List[float]], baselines: Dict[str, str]) -> List[dict]:
    rows = []
    for name, values in seconds.items():
        baseline = seconds[baselines[name]]
        rows.append(
            {
                "variant": name,
                "fastest_s": min(values),
                "median_s": statistics.median(values),
                "all_s": values,
                "speed_up_fastest": min(baseline) / min(values),
                "speed_up_median": statistics.median(baseline) / statistics.median(values),
                "versus": baselines[name],
            }
        )
    return rows


def markdown_table(rows: List[dict], what: str) -> str:
    with_diff = "max_abs_diff_vs_torch_float32" in rows[0]
    lines = [
        f"| {what} | fastest s | median s | vs {rows[0]['versus']} (fastest / median) |"
        + (" max abs diff vs torch float32 |" if with_diff else ""),
        "| --- | --- | --- | --- |" + (" --- |" if with_diff else ""),
    ]
    for row in rows:
        diff = f" {row['max_abs_diff_vs_torch_float32']:.1e} |" if with_diff else ""
        lines.append(
            f"| {row['variant']} | {row['fastest_s']:.3f} | {row['median_s']:.3f} | "
            f"x{row['speed_up_fastest']:.2f} / x{row['speed_up_median']:.2f} |{diff}"
        )
    return "\n".join(lines)


def cpu_engines_suite(args) -> dict:
    check_engines_installed()
    quiet()
    threads = args.num_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    rounds = args.repeats
    pipe = load_pipeline_folder(args.pipeline, dtype=torch.float32)  # fp16 on disk; float32 on the CPU
    unet = pipe.unet.eval()
    inputs = main_job_inputs(pipe, args.seed)
    result = {
        "machine": machine(),
        "settings": {
            "pipeline": args.pipeline or "embedded default",
            "work": f"one main-job step: UNet on {BATCH} unconditional + {BATCH} prompted images",
            "prompt_tokens": inputs["prompted"].shape[1],
            "threads": threads,
            "rounds": rounds,
            "thread_layout_steps": args.thread_layout_steps,
        },
        "load_average_before": os.getloadavg(),
    }
    print(f"machine: {result['machine']}\nsettings: {result['settings']}", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        variants, result["one_off_seconds"] = build_variants(
            unet, inputs, folder, threads, args.num_threads is not None
        )
        print(f"one-off seconds: {json.dumps(result['one_off_seconds'])}", flush=True)
        seconds, outputs = time_interleaved(variants, rounds)
    rows = summarize(seconds, dict.fromkeys(seconds, "torch float32"))
    for row in rows:
        row["max_abs_diff_vs_torch_float32"] = max_abs_difference(outputs[row["variant"]], outputs["torch float32"])
    result["engines"] = rows

    in_process = {dtype: torch_runner(unet, inputs, getattr(torch, dtype)) for dtype in ("float32", "bfloat16")}
    layout_seconds = time_thread_layouts(in_process, inputs, args.pipeline, threads, rounds, args.thread_layout_steps)
    result["thread_layouts"] = summarize(
        layout_seconds, {name: one_process_name(name.split(":")[0], threads) for name in layout_seconds}
    )
    result["load_average_after"] = os.getloadavg()
    result["table"] = markdown_table(rows, "one main-job step (64 + 64 images)")
    result["thread_layout_table"] = markdown_table(
        result["thread_layouts"], f"{args.thread_layout_steps} main-job steps"
    )
    print(result["table"] + "\n\n" + result["thread_layout_table"])
    print(f"load average before {result['load_average_before']}, after {result['load_average_after']}")
    return result
