"""Train a Lesson 5e model (reference network, lesson-format checkpoints).

    python scripts/train_lesson5e.py --output_dir output/train --base_channels 64 \
        --num_training_steps 10000 --ema_decay 0.999 --mixed_precision bf16

Multi-GPU: ``accelerate launch scripts/train_lesson5e.py ...``. Resume with ``--resume latest``.
On a GPU, ``--compile --compile_mode reduce-overhead`` compiles the network with CUDA graphs:
the step is launch-bound at MNIST sizes (see README, "Speed").
"""

import argparse
import dataclasses
import logging
import sys

from pipeline_mnist_ddim.cli import USER_ERRORS, check_writable_location, report
from pipeline_mnist_ddim.training import TrainConfig, train


def parse_args(argv=None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(TrainConfig):
        if field.type is bool:
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=field.default)
        else:
            arg_type = {int: int, float: float}.get(field.type, float if "float" in str(field.type) else str)
            parser.add_argument(f"--{field.name}", type=arg_type, default=field.default)
    args = parser.parse_args(argv)
    if args.channels not in (1, 3):
        parser.error("--channels must be 1 or 3")
    if args.base_channels % 32:
        parser.error("--base_channels must be a multiple of 32 (GroupNorm uses 32 groups)")
    if args.compile_mode == "none":
        args.compile_mode = None
    if args.compile_mode not in (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        parser.error("--compile_mode must be default, reduce-overhead (CUDA graphs), max-autotune or max-autotune-no-cudagraphs")
    if args.compile_mode and not args.compile:
        parser.error("--compile_mode needs --compile")
    if args.mixed_precision not in ("no", "bf16", "fp16"):
        parser.error("--mixed_precision must be no, bf16 or fp16")
    return TrainConfig(**vars(args))


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = parse_args(argv)
    try:
        check_writable_location(config.output_dir)
        print(train(config))
    except USER_ERRORS as err:  # an unwritable --output_dir, a full disk, a bad --resume
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
