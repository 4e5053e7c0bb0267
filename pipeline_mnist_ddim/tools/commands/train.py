r"""Train a Lesson 5e model (reference network, lesson-format checkpoints).

    mnist-ddim-train --output_dir output/train --base_channels 64 \
        --num_training_steps 10000 --ema_decay 0.999 --mixed_precision bf16

(or python scripts/train_lesson5e.py ...). Multi-GPU: ``accelerate launch scripts/train_lesson5e.py ...``.
Resume with ``--resume latest``. On a GPU, ``--compile --compile_mode reduce-overhead`` compiles
the network with CUDA graphs: the step is launch-bound at MNIST sizes (see README, "Speed").
"""

import logging
import sys

from pipeline_mnist_ddim.conversion.files import check_writable_location
from pipeline_mnist_ddim.tools.cli import USER_ERRORS, parse_settings, quiet_on_ctrl_c, report
from pipeline_mnist_ddim.tools.settings import TrainConfig


def parse_args(argv=None) -> TrainConfig:
    (config,) = parse_settings([TrainConfig], argv, description=__doc__)
    if config.channels not in (1, 3):
        raise SystemExit(report(ValueError("--channels must be 1 or 3")))
    if config.base_channels % 32:
        raise SystemExit(report(ValueError("--base_channels must be a multiple of 32 (GroupNorm uses 32 groups)")))
    if config.compile_mode == "none":
        config.compile_mode = None
    if config.compile_mode not in (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        raise SystemExit(
            report(
                ValueError(
                    "--compile_mode must be default, reduce-overhead (CUDA graphs), max-autotune "
                    "or max-autotune-no-cudagraphs"
                )
            )
        )
    if config.compile_mode and not config.compile:
        raise SystemExit(report(ValueError("--compile_mode needs --compile")))
    return config


@quiet_on_ctrl_c
def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = parse_args(argv)
    try:
        check_writable_location(config.output_dir)
        from pipeline_mnist_ddim.tools.training import train

        print(train(config))
    except USER_ERRORS as err:  # an unwritable --output_dir, a full disk, a bad --resume
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
