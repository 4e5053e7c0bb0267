"""Thread layouts of the main job on a CPU: one process with every thread against two 1-thread processes
that each run one half of every step (the unconditional batch and the prompted one), in parallel.

Part of ``--suite cpu_engines`` (cpu_engines.py), which times the in-process variants.
"""

import contextlib
import copy
import multiprocessing
import time
from typing import Callable, Dict, List

import torch
from diffusers.utils import logging as diffusers_logging

from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder


def quiet() -> None:
    diffusers_logging.set_verbosity_error()  # .to(bfloat16) logs a harmless note each time
    diffusers_logging.disable_progress_bar()  # of loading the pipeline's components


def _half_worker(connection, pipeline, inputs, half: str) -> None:
    """A 1-thread process that runs its half of each step (one batch of 64) when asked."""
    quiet()
    torch.set_num_threads(1)
    unet = load_pipeline_folder(pipeline, dtype=torch.float32).unet.eval()
    models = {"float32": unet, "bfloat16": copy.deepcopy(unet).to(torch.bfloat16)}
    context = inputs[half]
    with torch.no_grad():
        for model in models.values():  # warm-up
            model(inputs["sample"].to(model.dtype), inputs["timestep"], encoder_hidden_states=context.to(model.dtype))
        connection.send("ready")
        while True:
            request = connection.recv()
            if request is None:
                return
            dtype, steps = request
            model = models[dtype]
            sample, hidden = inputs["sample"].to(model.dtype), context.to(model.dtype)
            for _ in range(steps):
                model(sample, inputs["timestep"], encoder_hidden_states=hidden).sample.float()
            connection.send("done")


def one_process_name(engine: str, threads: int) -> str:
    return f"{engine}: 1 process x {threads} threads"


def time_thread_layouts(
    in_process: Dict[str, Callable[[], object]], inputs, pipeline, threads: int, rounds: int, steps: int
) -> Dict[str, List[float]]:
    """Wall seconds for ``steps`` main-job steps: one process with ``threads`` threads running ``in_process[dtype]``
    (one step each call) vs two 1-thread processes, each running one half of the batch."""
    context = multiprocessing.get_context("spawn")
    connections, workers = [], []
    for half in ("unconditional", "prompted"):
        ours, theirs = context.Pipe()
        worker = context.Process(target=_half_worker, args=(theirs, pipeline, inputs, half), daemon=True)
        worker.start()
        theirs.close()  # the worker's end lives in the worker only: if it dies, recv() raises instead of waiting
        connections.append(ours)
        workers.append(worker)
        # One at a time: loading a folder copies its remote code into the modules cache, and two
        # processes copying and importing it at once can import a half-written file.
        if ours.recv() != "ready":
            raise RuntimeError("a thread-layout worker did not start")
    seconds = {}
    try:
        for _ in range(rounds):
            for dtype in ("float32", "bfloat16"):
                torch.set_num_threads(threads)
                started = time.perf_counter()
                for _ in range(steps):
                    in_process[dtype]()
                seconds.setdefault(one_process_name(f"torch {dtype}", threads), []).append(
                    time.perf_counter() - started
                )
                started = time.perf_counter()
                for connection in connections:
                    connection.send((dtype, steps))
                for connection in connections:
                    connection.recv()
                seconds.setdefault(f"torch {dtype}: 2 processes x 1 thread, one half each", []).append(
                    time.perf_counter() - started
                )
    finally:
        for connection in connections:
            with contextlib.suppress(OSError):  # a worker that died has nothing to stop
                connection.send(None)
        for worker in workers:
            worker.join(timeout=60)
    return seconds
