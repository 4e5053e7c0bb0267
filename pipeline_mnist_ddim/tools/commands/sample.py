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

from pipeline_mnist_ddim.conversion.files import check_writable_location
from pipeline_mnist_ddim.tools.cli import (
    USER_ERRORS,
    parse_settings,
    quiet_on_ctrl_c,
    report,
    sigterm_unwinds,
)
from pipeline_mnist_ddim.tools.settings import SampleSettings


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
