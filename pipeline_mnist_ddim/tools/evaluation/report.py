"""The evaluation's report: Markdown tables, the quality-vs-steps plot, and the files written."""

import json
import logging
import os
from typing import Any, Dict, List, Optional

import torch

from pipeline_mnist_ddim.tools.commands.evaluate import EvaluationSettings
from pipeline_mnist_ddim.tools.image_grid import save_grid


logger = logging.getLogger(__name__)


def _fmt(value: Optional[float], spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def _cell_text(cell: Optional[Dict[str, Any]]) -> str:
    if not cell:
        return "—"
    accuracy = f" ({cell['accuracy']:.1%})" if "accuracy" in cell else ""  # .0% would show 99.5% as 100%
    return f"{cell['frechet']:.2f}{accuracy}"


def table_markdown(table: Dict[str, Any], settings: EvaluationSettings) -> str:
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
    settings = EvaluationSettings(**results["settings"])
    held_out = results.get("num_held_out", 500)
    parts = [
        f"# DDIM evaluation of `{results['pipeline']}`",
        "",
        f"Device: {results['device']} x {results['num_processes']} process(es); "
        f"wall time {results['seconds'] / 60:.1f} min"
        + (
            " (run with --cache_dir: cells already in its cache were reused; evaluation.json keeps each cell's own time)"
            if settings.cache_dir
            else ""
        )
        + ". Frechet distance is on the shipped digit classifier's "
        f"64 features (not Inception) against the {held_out} held-out real digits; the real-data floor is N "
        f"balanced training digits against the same {held_out} (mean ± std over draws), i.e. what a perfect "
        "generator scores at that N.",
    ]
    if "table" in results:
        kind = "prompted (labels balanced 0-9)" if results["table"]["conditional"] else "unconditional"
        parts += [
            "",
            f"## Table 1: Frechet distance (conditional accuracy), {kind} samples",
            "",
            table_markdown(results["table"], settings),
            "",
            "The distance shrinks as N grows: compare cells by their excess over the floor of their column "
            "(quality_vs_steps.png plots it), and read differences within the floor's std as noise.",
        ]
    if results.get("guidance"):
        g = results["guidance"]
        parts += [
            "",
            f"## Classifier-free guidance (S = {g['steps']}, eta = 0, N = {settings.samples_per_cell})",
            "",
            guidance_markdown(g),
            "",
            f"Best scale by accuracy: {g['best_scale']:g}.",
        ]
    if results.get("unconditional"):
        u = results["unconditional"]
        parts += [
            "",
            f"## Unconditional samples (S = {u['num_inference_steps']}, eta = 0, N = {u['n']})",
            "",
            f"- predicted-label entropy {u['entropy_bits']:.3f} bits (max {u['max_entropy_bits']:.3f}); "
            f"all ten digits present: {'yes' if u['all_digits_present'] else 'no'}",
            f"- histogram 0-9: {u['histogram']}",
            f"- Frechet distance {u['frechet']:.2f} (floor at N = {u['n']}: {u['floor']['mean']:.2f})",
        ]
    if results.get("copying"):
        parts += [
            "",
            "## Copying check: RMS distance to the nearest training image",
            "",
            "| images | N | mean | median | min | share below real min |",
            "|---|---|---|---|---|---|",
        ]
        for name, d in results["copying"].items():
            share = _fmt(d.get("share_below_real_min"), ".0%")
            parts.append(f"| {name} | {d['n']} | {d['mean']:.3f} | {d['median']:.3f} | {d['min']:.3f} | {share} |")
    if results.get("inversion"):
        inv = results["inversion"]
        falls = ", ".join(f"{mode}: {'yes' if ok else 'NO'}" for mode, ok in inv["falls_with_steps"].items())
        falls_median = ", ".join(
            f"{mode}: {'yes' if ok else 'NO'}" for mode, ok in inv.get("median_falls_with_steps", {}).items()
        )
        parts += [
            "",
            "## Table 2: DDIM inversion, per-dimension reconstruction MSE (pixels in [0, 1])",
            "",
            "Rows without a statistic are the mean over images, the paper's number.",
            "",
            inversion_markdown(inv),
            "",
            f"Mean error falls at every step of S -- {falls}.",
            f"Median error falls at every step of S -- {falls_median}.",
        ]
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
            style = (
                dict(marker="*", markersize=11, linestyle="none", color="black") if row == "ddpm" else dict(marker="o")
            )
            ax.plot(*zip(*points), label=f"DDPM ({points[0][0]} steps)" if row == "ddpm" else f"eta = {row}", **style)
        if metric == "excess":
            spread = sorted(
                {(int(s), c["floor"]["std"]) for cells in table["rows"].values() for s, c in cells.items() if c}
            )
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
    os.makedirs(output_dir, exist_ok=True)
    paths = [os.path.join(output_dir, name) for name in ("evaluation.md", "evaluation.json")]
    with open(paths[0], "w") as f:
        f.write(results_markdown(results))
    with open(paths[1], "w") as f:
        json.dump(results, f, indent=2)
    if "table" in results and plot_quality_vs_steps(
        results["table"], os.path.join(output_dir, "quality_vs_steps.png")
    ):
        paths.append(os.path.join(output_dir, "quality_vs_steps.png"))
    for name, grid in images.items():
        if grid is not None:
            paths.append(os.path.join(output_dir, f"samples_{name}.png"))
            save_grid(grid[:100], paths[-1], nrow=10)
    return paths
