"""DDIM latent-space figures for any pipeline (logic: pipeline_mnist_ddim/tools/interpolation.py).

    mnist-ddim-interpolate                                   # embedded default, all three figures
    mnist-ddim-interpolate --sections consistency --consistency_steps 10 50 1000
    mnist-ddim-interpolate --pipeline PATH_OR_HUB_ID --prompt_pairs 3,8 1,7 --num_frames 12

(or python scripts/interpolate.py ...). Writes into --output_dir:
slerp_latents.png (rows: pairs of latents, slerped, decoded with DDIM eta=0),
slerp_prompts.png (rows: pairs of prompts, embeddings slerped, one fixed latent),
consistency.png (rows: S; columns: the same latents) and interpolation.json.
"""

import json
import logging
import sys

from pipeline_mnist_ddim.conversion.files import check_writable_location
from pipeline_mnist_ddim.tools.cli import USER_ERRORS, parse_settings, quiet_on_ctrl_c, report
from pipeline_mnist_ddim.tools.settings import InterpolateOptions, InterpolationSettings


def parse_args(argv=None):
    return parse_settings([InterpolationSettings, InterpolateOptions], argv, description=__doc__)


@quiet_on_ctrl_c
def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    settings, options = parse_args(argv)
    try:
        settings.validate()  # everything that needs no model, before loading one
        check_writable_location(options.output_dir)  # now, not after the sampling
        from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder
        from pipeline_mnist_ddim.tools.devices import pick_device, torch_dtype
        from pipeline_mnist_ddim.tools.interpolation import check_against_pipeline, run_interpolation

        device = pick_device(options.device)
        pipe = load_pipeline_folder(options.pipeline, torch_dtype(options.dtype)).to(device)
        check_against_pipeline(pipe, settings)
        results = run_interpolation(pipe, settings, options.output_dir)
    except USER_ERRORS as err:  # bad paths, prompts and arguments: say what, no traceback
        return report(err)
    print(json.dumps({k: v for k, v in results.items() if k != "settings"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
