"""Lesson 6's sampling script on the diffusers port.

    mnist-ddim-sample                      # embedded default, seed 42, 50 DDIM steps, eta 0
    mnist-ddim-sample --pipeline PATH_OR_REPO --guidance_scale 2 --prompts "7 seven 3"
    mnist-ddim-sample --checkpoint gaussian_diffusion_ddpm-10000.pt --text_encoder openai/clip-vit-large-patch14

(or python scripts/sample_ddim.py ...). Writes unconditional_samples.png, conditional_samples.png
(8x8 grids), conditional_sample_prompts.txt and settings.json into --output_dir;
when that folder already holds a run, into output_dir/run-N (or replace it with --overwrite).
"""

import logging
import sys
from dataclasses import dataclass
from typing import Literal, Optional

from pipeline_mnist_ddim.conversion.files import check_writable_location
from pipeline_mnist_ddim.tools.arguments import (
    DEVICE_HELP,
    DTYPE_CHOICES,
    PIPELINE_HELP,
    at_least,
    check_eta,
    check_guidance_scale,
    check_seed,
    option,
    whole_number,
)
from pipeline_mnist_ddim.tools.cli import (
    USER_ERRORS,
    parse_settings,
    quiet_on_ctrl_c,
    report,
    sigterm_unwinds,
)


# The pipeline samples a grid as one batch, whose activations grow with it (the default at 64 images:
# about 1 GB; a full-size network about 4x that): a bound checked before loading.
MAX_SAMPLES = 256  # --num_samples: images per grid (the lesson's: 64)


@dataclass
class SampleSettings:
    """Lesson 6's sampling run (``mnist-ddim-sample``)."""

    pipeline: Optional[str] = option(None, PIPELINE_HELP)
    checkpoint: Optional[str] = option(None, "a Lesson 5e checkpoint, converted in memory (instead of --pipeline)")
    text_encoder: Optional[str] = option(
        None, "with --checkpoint: Hub id or folder of its text encoder (None: none, unconditional grids only)"
    )
    compact_text_encoder: bool = option(False, "with --checkpoint: keep only the encoder's outputs for the 20 prompts")
    ema: bool = option(False, "with --checkpoint: use its EMA weights")
    output_dir: str = option("output", "where the grids go; a folder holding a run gets output_dir/run-N instead")
    overwrite: bool = option(False, "replace earlier outputs in --output_dir")
    num_samples: int = option(64, "images per grid")
    num_inference_steps: int = option(50, "DDIM steps S")
    eta: float = option(0.0, "DDIM eta: 0 deterministic, 1 DDPM-like")
    guidance_scale: float = option(1.0, "classifier-free guidance of the conditional grid (<= 1: none, the lesson)")
    seed: int = option(42, "seed of the latents and the random prompts")
    device: str = option("auto", DEVICE_HELP)
    dtype: Literal[DTYPE_CHOICES] = option(
        "float32",
        "dtype of the UNet and text encoder; auto: bfloat16 weights on "  # type: ignore[valid-type]
        "a CPU with native bf16 (AMX, AVX512-BF16), else float32",
    )
    prompts: Optional[str] = option(None, 'prompts to cycle through, e.g. "7 seven 3" (None: random digits)')

    def validate(self) -> None:
        """Everything that needs no model (nor torch), checked before loading one: a ValueError naming the flag.

        Numbers come back normalised (an int count, a float scale).
        """
        if self.pipeline and self.checkpoint:
            raise ValueError("pass either --pipeline or --checkpoint, not both")
        checkpoint_only = (
            ("--text_encoder", self.text_encoder),
            ("--compact_text_encoder", self.compact_text_encoder),
            ("--ema", self.ema),
        )
        for flag, value in checkpoint_only:
            if value and not self.checkpoint:
                raise ValueError(f"{flag} applies to --checkpoint only (a pipeline folder has its own text encoder)")
        self.num_samples = whole_number(self.num_samples, "--num_samples", 1, MAX_SAMPLES)
        self.seed = check_seed(self.seed)
        # The upper bound is the loaded model's schedule (tools/sample.py: check_against_pipeline).
        self.num_inference_steps = at_least(self.num_inference_steps, "--num_inference_steps", 1)
        self.eta = check_eta(self.eta)
        self.guidance_scale = check_guidance_scale(self.guidance_scale)
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"--dtype must be one of {list(DTYPE_CHOICES)}, not {self.dtype!r}")
        if self.prompts is not None and not self.prompts.split():
            raise ValueError('--prompts is empty: give words such as "7 seven 3", or leave it out for random digits')


def parse_args(argv=None) -> SampleSettings:
    (settings,) = parse_settings([SampleSettings], argv, description=__doc__)
    return settings


@quiet_on_ctrl_c
def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    settings = parse_args(argv)
    try:
        settings.validate()  # before importing torch: bad arguments answer at once
        check_writable_location(settings.output_dir)
        from pipeline_mnist_ddim.tools.sample import run

        with sigterm_unwinds():  # a killed run removes its half-written file
            print(run(settings))
    except USER_ERRORS as err:  # bad paths, arguments and files, a full disk: say what, no traceback
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
