"""The measurements: Table 1, guidance, unconditional samples, copying, inversion (Table 2), and the run of them.

- ``table``: the paper's Table 1 layout -- rows eta in {0.0, 0.2, 0.5, 1.0} plus DDPM (Algorithm 2,
  1000 steps, ``DDPMScheduler`` "fixed_large"), columns S in {10, 20, 50, 100}. Cells are the
  classifier Frechet distance of prompted samples (labels balanced 0-9, word or numeral at
  random) to the 500 held-out real digits, and the conditional accuracy.
- ``guidance``: classifier-free guidance scales at S = 50, eta = 0.
- ``unconditional``: predicted-label entropy and histogram of unconditional samples.
- ``copying``: nearest-training-image distances of samples vs those of held-out real digits.
- ``inversion``: the paper's Table 2 -- DDIM-invert held-out digits and decode them again.
"""

import functools
import logging
import math
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from accelerate import PartialState

from pipeline_mnist_ddim.lesson.schedulers import lesson_ddpm_scheduler
from pipeline_mnist_ddim.tools.classifier import DigitClassifier, load_default_classifier
from pipeline_mnist_ddim.tools.commands.evaluate import EvaluationSettings
from pipeline_mnist_ddim.tools.evaluation.jobs import (
    Job,
    batches,
    cached,
    generate,
    make_jobs,
    process_state,
    sharded_map,
    swapped_scheduler,
)
from pipeline_mnist_ddim.tools.evaluation.real_data import RealData
from pipeline_mnist_ddim.tools.metrics import (
    label_entropy,
    label_histogram,
    nearest_neighbour_distance,
    predict_labels,
)


logger = logging.getLogger(__name__)

# DDIM paper, Table 2: CIFAR-10 per-dimension reconstruction MSE (pixels in [0, 1]).
PAPER_CIFAR10_RECONSTRUCTION = {10: 0.014, 20: 0.0065, 50: 0.0023, 100: 0.0009, 200: 0.0004}


def _labels(jobs: Sequence[Job]) -> Optional[List[int]]:
    return None if jobs[0].label is None else [job.label for job in jobs]


def evaluate_cell(
    pipe, jobs: Sequence[Job], real: Optional[RealData], state: PartialState, settings: EvaluationSettings, **sampling
) -> Tuple[Optional[Dict[str, Any]], Optional[torch.Tensor]]:
    """Samples ``jobs`` with the given sampling arguments and scores them (main process only)."""
    steps, eta, scale = sampling["num_inference_steps"], sampling.get("eta", 0.0), sampling.get("guidance_scale", 1.0)
    desc = f"S={steps} eta={eta} w={scale}"
    kind = "prompted" if jobs[0].prompt is not None else "unconditional"
    key = f"{kind}_{type(pipe.scheduler).__name__}_S{steps}_eta{eta:g}_w{scale:g}_N{len(jobs)}_seed{jobs[0].seed}"
    images, seconds = cached(
        settings,
        state,
        key,
        lambda: generate(pipe, jobs, state, batch_size=settings.batch_size, desc=desc, **sampling),
    )
    if images is None:
        return None, None
    result = {**sampling, **real.score(images, _labels(jobs)), "floor": real.floor(len(jobs), settings.floor_draws)}
    result["seconds"] = seconds
    logger.info(
        "%s N=%d: Frechet %.2f (floor %.2f)%s in %.0f s",
        desc,
        len(jobs),
        result["frechet"],
        result["floor"]["mean"],
        f", accuracy {result['accuracy']:.1%}" if "accuracy" in result else "",
        result["seconds"],
    )
    return result, images


# ---------------------------------------------------------------------------- sections


def run_table(
    pipe, real: RealData, state: PartialState, settings: EvaluationSettings, conditional: bool
) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """Table 1: one cell per (eta, S), plus the DDPM row; returns the results and the cells' images."""
    largest = max([settings.samples_for(s) for s in settings.steps] + [settings.ddpm_samples * settings.ddpm])
    jobs = make_jobs(largest, settings.seed, "table", conditional)
    rows, images = {}, {}
    for eta in settings.etas:
        for steps in settings.steps:
            cell, cell_images = evaluate_cell(
                pipe, jobs[: settings.samples_for(steps)], real, state, settings, num_inference_steps=steps, eta=eta
            )
            rows.setdefault(f"{eta:g}", {})[str(steps)] = cell
            images[f"eta{eta:g}_S{steps}"] = cell_images
    if settings.ddpm and settings.ddpm_samples:
        with swapped_scheduler(pipe, lesson_ddpm_scheduler()):
            cell, images["ddpm"] = evaluate_cell(
                pipe, jobs[: settings.ddpm_samples], real, state, settings, num_inference_steps=settings.ddpm_steps
            )
        rows["ddpm"] = {str(settings.ddpm_steps): cell}
    return {"rows": rows, "conditional": conditional}, images


def table_has_guidance_cell(settings: EvaluationSettings) -> bool:
    """Whether the table's eta = 0 cell holds guidance 1.0's samples (decided from settings alone,
    so that every process runs the same collectives)."""
    return (
        0.0 in settings.etas
        and settings.guidance_steps in settings.steps
        and settings.samples_for(settings.guidance_steps) == settings.samples_per_cell
    )


def run_guidance(
    pipe, real: RealData, state: PartialState, settings: EvaluationSettings, table: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """Conditional accuracy and Frechet distance per guidance scale at S = guidance_steps, eta = 0."""
    jobs = make_jobs(settings.samples_per_cell, settings.seed, "table", conditional=True)
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
    pipe, real: RealData, state: PartialState, settings: EvaluationSettings
) -> Tuple[Dict[str, Any], Optional[torch.Tensor]]:
    """Predicted-label entropy and histogram of unconditional samples: are all ten digits drawn?"""
    jobs = make_jobs(settings.unconditional_samples, settings.seed, "unconditional", conditional=False)
    cell, images = evaluate_cell(pipe, jobs, real, state, settings, num_inference_steps=settings.unconditional_steps)
    if images is None:
        return {}, None
    predicted = predict_labels(real.classifier, images)
    histogram = label_histogram(predicted).tolist()
    cell.update(
        entropy_bits=label_entropy(predicted),
        max_entropy_bits=math.log2(10),
        histogram=histogram,
        all_digits_present=all(count > 0 for count in histogram),
    )
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
    pipe, real: RealData, state: PartialState, settings: EvaluationSettings, conditional: bool
) -> Dict[str, Any]:
    """Table 2: per-dimension reconstruction MSE (pixels in [0, 1]) of held-out digits for each S."""
    jobs = make_jobs(settings.inversion_samples, settings.seed, "inversion", conditional=True)
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
            key = f"inversion_{mode}_S{steps}_N{len(images)}_seed{settings.seed}"
            reconstruct = functools.partial(
                _reconstruct_sharded, pipe, items, steps, state, f"invert {mode} S={steps}"
            )
            recon, _ = cached(settings, state, key, reconstruct)
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
    return {
        "n": len(images),
        "mse": results,
        "median_mse": medians,
        "max_mse": worst,
        "falls_with_steps": falls,
        "median_falls_with_steps": falls_median,
        "paper_cifar10": paper,
    }


# ---------------------------------------------------------------------------- the whole run


def evaluate(
    pipe,
    settings: EvaluationSettings,
    pipeline_name: str = "pipeline",
    classifier: Optional[DigitClassifier] = None,
    real: Optional[RealData] = None,
) -> Tuple[Optional[Dict[str, Any]], Dict[str, torch.Tensor]]:
    """Runs the chosen sections; the main process gets (results, sample grids), others (None, {}).

    ``classifier`` defaults to the shipped one; ``real`` (digits plus classifier) to the
    ``settings.dataset`` splits, with that classifier.
    """
    settings.validate()
    if "inversion" in settings.sections and not hasattr(pipe, "invert"):
        raise ValueError(
            f"the inversion section needs pipe.invert(), which {type(pipe).__name__} lacks; "
            "leave 'inversion' out of the sections"
        )
    state = process_state()
    started = time.perf_counter()
    pipe.set_progress_bar_config(disable=True)  # our own bars count batches instead
    conditional = pipe.text_encoder is not None and pipe.tokenizer is not None
    if real is None:
        classifier = (classifier or load_default_classifier()).to(state.device)
        real = RealData.load(classifier, settings.dataset, pipe.unet.config.in_channels, settings.seed)
    results: Dict[str, Any] = {
        "pipeline": pipeline_name,
        "settings": asdict(settings),
        "device": str(state.device),
        "num_processes": state.num_processes,
        "num_held_out": len(real.held_out),
        "section_seconds": {},
    }
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
            "unconditional", lambda: run_unconditional(pipe, real, state, settings)
        )
    if "copying" in sections and state.is_main_process:
        main_cell = images.get(f"eta0_S{settings.guidance_steps}")
        picked = {
            f"prompted S={settings.guidance_steps} eta=0": main_cell,
            "unconditional": images.get("unconditional"),
        }
        results["copying"] = timed("copying", lambda: run_copying(real, picked))
    if "inversion" in sections:
        results["inversion"] = timed("inversion", lambda: run_inversion(pipe, real, state, settings, conditional))
    results["seconds"] = round(time.perf_counter() - started, 1)
    return (results, images) if state.is_main_process else (None, {})
