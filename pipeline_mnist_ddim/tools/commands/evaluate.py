r"""Reproduce the DDIM paper's tables on MNIST for any pipeline (logic: pipeline_mnist_ddim/tools/evaluation/).

    mnist-ddim-evaluate                                   # embedded default, CPU-sized defaults
    mnist-ddim-evaluate --quick                           # smoke run of every section
    mnist-ddim-evaluate --pipeline PATH_OR_HUB_ID --sections table inversion --etas 0 1 --steps 10 50
    accelerate launch --multi_gpu --num_processes 4 scripts/evaluate.py --num_samples 1000 \
        --num_samples_slow 1000 --num_samples_ddpm 1000 --batch_size 250   # large N, batches split across GPUs

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
import os
import sys
from typing import Tuple

from pipeline_mnist_ddim.conversion.files import check_writable_location
from pipeline_mnist_ddim.tools.cli import USER_ERRORS, parse_settings, quiet_on_ctrl_c, report
from pipeline_mnist_ddim.tools.settings import EvalSettings, EvaluateOptions


def parse_args(argv=None) -> Tuple[EvalSettings, EvaluateOptions]:
    """--quick (or the defaults), overridden by every flag that was given."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quick = dataclasses.asdict(EvalSettings.quick()) if "--quick" in argv else None
    settings, options = parse_settings([EvalSettings, EvaluateOptions], argv, description=__doc__, defaults=quick)
    if options.reuse_cache and settings.cache_dir is None:
        settings.cache_dir = os.path.join(options.output_dir, "cells")
    return settings, options


def load(options: EvaluateOptions):
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
