"""What the evaluation runs and how: one seeded job per image, the split across processes, the cache.

Every image has its own seed (one ``torch.Generator`` each), and a cell with fewer samples uses
the first samples of the larger cells, so numbers do not depend on batching or on how many
processes share the work. Under ``accelerate launch`` the batches are split with
``PartialState.split_between_processes`` and collected with ``gather_object``.
"""

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from pipeline_mnist_ddim.conversion.files import atomic_path
from pipeline_mnist_ddim.lesson import TEXT_LABELS
from pipeline_mnist_ddim.tools.commands.evaluate import EvaluationSettings


logger = logging.getLogger(__name__)

# Seed offsets keep the sections' per-image seeds apart.
SEED_STRIDE = 1_000_000
SECTION_SEEDS = {"table": 0, "unconditional": 1, "inversion": 2}


@dataclass(frozen=True)
class Job:
    """One image to generate: its position, its own seed, and (when prompted) its label and prompt."""

    index: int
    seed: int
    label: Optional[int] = None
    prompt: Optional[str] = None


# ---------------------------------------------------------------------------- jobs and sharding


def balanced_labels(n: int, generator: torch.Generator) -> Tuple[List[int], List[str]]:
    """Labels in blocks of ten (a shuffled 0-9 each) with a word or numeral each.

    Drawn block by block, so the first k of n labels are the k labels drawn for k: smaller
    cells reuse exactly the first images of larger ones, and every prefix of 10m is balanced.
    """
    labels, prompts = [], []
    for _ in range(math.ceil(n / 10)):
        block = torch.randperm(10, generator=generator).tolist()
        choices = torch.randint(0, 2, (10,), generator=generator).tolist()
        labels += block
        prompts += [TEXT_LABELS[label][choice] for label, choice in zip(block, choices)]
    return labels[:n], prompts[:n]


def make_jobs(n: int, seed: int, section: str, conditional: bool) -> List[Job]:
    """``n`` jobs with per-image seeds ``seed * 10^6 + offset + index`` (sharding-independent)."""
    base = seed * SEED_STRIDE + SECTION_SEEDS[section] * 100_000
    if not conditional:
        return [Job(i, base + i) for i in range(n)]
    labels, prompts = balanced_labels(n, torch.Generator().manual_seed(base))
    return [Job(i, base + i, label, prompt) for i, (label, prompt) in enumerate(zip(labels, prompts))]


def sharded_map(
    items: Sequence[Any], fn: Callable[[Any], np.ndarray], state: PartialState, desc: str
) -> Optional[np.ndarray]:
    """Applies ``fn`` to each item (a batch) across processes; the main process gets the concatenation.

    Results travel as numpy arrays (picklable, device-free) with their item index, so the
    order is restored whatever the split.
    """
    indexed = list(enumerate(items))
    results = []
    with state.split_between_processes(indexed) as mine:
        for index, item in tqdm(mine, desc=desc, leave=False, disable=not state.is_local_main_process):
            results.append((index, fn(item)))
    gathered = gather_object(results) if state.num_processes > 1 else results
    if not state.is_main_process:
        return None
    ordered = [array for _, array in sorted(gathered, key=lambda pair: pair[0])]
    return np.concatenate(ordered) if ordered else None


def process_state() -> PartialState:
    """This process's accelerate state; several CPU-only processes (e.g. ``torchrun`` on a laptop) share work over gloo.

    ``PartialState`` only forms a CPU process group when asked to (``cpu=True``); elsewhere it
    picks the accelerator as usual. The state is a singleton: the first call decides.
    """
    multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=multi_process and not torch.cuda.is_available())


def batches(items: Sequence[Any], batch_size: int) -> List[Sequence[Any]]:
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


@contextlib.contextmanager
def swapped_scheduler(pipe, scheduler) -> Iterator[None]:
    """Temporarily replaces ``pipe.scheduler`` (e.g. with DDPM), restoring it even on errors."""
    original = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        yield
    finally:
        pipe.scheduler = original


def generate(
    pipe,
    jobs: Sequence[Job],
    state: PartialState,
    *,
    num_inference_steps: int,
    eta: float = 0.0,
    guidance_scale: float = 1.0,
    batch_size: int = 50,
    desc: str = "sampling",
) -> Optional[torch.Tensor]:
    """Samples one image per job ((N, C, 32, 32) in [0, 1] on the main process, None elsewhere)."""

    def run_batch(batch: Sequence[Job]) -> np.ndarray:
        generators = [torch.Generator().manual_seed(job.seed) for job in batch]  # CPU: same noise on any device
        prompted = batch[0].prompt is not None
        inputs = dict(prompt=[job.prompt for job in batch]) if prompted else dict(batch_size=len(batch))
        images = pipe(
            **inputs,
            generator=generators,
            num_inference_steps=num_inference_steps,
            eta=eta,
            guidance_scale=guidance_scale if prompted else 1.0,
            output_type="pt",
        ).images
        return images.float().cpu().numpy()

    arrays = sharded_map(batches(list(jobs), batch_size), run_batch, state, desc)
    return None if arrays is None else torch.from_numpy(arrays)


def cached(
    settings: EvaluationSettings, state: PartialState, key: str, make: Callable[[], Optional[torch.Tensor]]
) -> Tuple[Optional[torch.Tensor], Optional[float]]:
    """``make()``'s images and the seconds they took, stored under ``settings.cache_dir`` and reused from there.

    Long CPU runs can be cut short; rerunning with the same cache picks up where they stopped.
    Only single-process runs use the cache, since every process must run the same collectives.
    """
    path = os.path.join(settings.cache_dir, key) if settings.cache_dir and state.num_processes == 1 else None
    if path and os.path.isfile(path + ".npy") and os.path.isfile(path + ".json"):
        with open(path + ".json") as f:
            seconds = json.load(f)["seconds"]
        logger.info("reusing %s.npy (took %.0f s)", path, seconds)
        return torch.from_numpy(np.load(path + ".npy")), seconds
    started = time.perf_counter()
    images = make()
    seconds = round(time.perf_counter() - started, 1)
    if path:
        os.makedirs(settings.cache_dir, exist_ok=True)
        with atomic_path(path + ".npy") as temporary:  # a killed run leaves no half file
            np.save(temporary, images.numpy())
        with atomic_path(path + ".json") as temporary, open(temporary, "w") as f:
            json.dump({"seconds": seconds}, f)
    return images, seconds
