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
from dataclasses import dataclass
from typing import List, Optional, Tuple

from pipeline_mnist_ddim.conversion.files import check_writable_location
from pipeline_mnist_ddim.tools.arguments import (
    DEVICE_HELP,
    PIPELINE_HELP,
    DtypeName,
    check_seed,
    check_steps,
    option,
    whole_number,
)
from pipeline_mnist_ddim.tools.cli import USER_ERRORS, parse_settings, quiet_on_ctrl_c, report


SECTIONS = ("latents", "prompts", "consistency")
# Upper bounds, checked before loading: the pipeline runs a strip or the consistency grid's row as one batch.
MAX_FRAMES = 64  # --num_frames: images per interpolation strip
MAX_ROWS = 16  # --num_pairs, --prompt_pairs: strips per figure
MAX_CONSISTENCY_SAMPLES = 64  # --consistency_samples
MAX_CONSISTENCY_ROWS = 10  # --consistency_steps: step counts S


@dataclass
class InterpolationSettings:
    """What ``mnist-ddim-interpolate`` draws; the defaults take a few minutes on a 2-core CPU."""

    sections: List[str] = option(list(SECTIONS), "figures to draw", choices=SECTIONS)
    num_frames: int = option(10, "images per strip")
    num_inference_steps: int = option(50, "DDIM steps of the strips")
    num_pairs: int = option(4, "latent pairs (rows) to interpolate")
    latent_prompt: Optional[str] = option(None, "prompt for the latent strips (None: unconditional, as the paper)")
    prompt_pairs: List[str] = option(["3,8", "1,7", "0,6", "4,9"], 'prompt pairs, e.g. 3,8 "one,seven"')
    consistency_samples: int = option(8, "latents (columns) of the consistency grid")
    consistency_steps: List[int] = option([10, 20, 50, 100, 1000], "step counts S (rows) of the consistency grid")
    consistency_prompt: Optional[str] = option(None, "prompt for the consistency grid (None: unconditional)")
    seed: int = option(0, "seed of the latents")

    # The figures' latents are seeded from seed (the latent pairs) to seed + LAST_SEED_OFFSET (interpolation.py).
    PROMPT_STRIP_SEED_OFFSET = 10_000  # the prompt strips' one latent
    CONSISTENCY_SEED_OFFSET = 20_000  # the consistency grid's latents, one per column
    LAST_SEED_OFFSET = CONSISTENCY_SEED_OFFSET + MAX_CONSISTENCY_SAMPLES

    def validate(self) -> None:
        """Everything that needs no model, checked before loading one: a ValueError naming the flag."""
        if not self.sections:
            raise ValueError(f"--sections is empty: choose from {', '.join(SECTIONS)}")
        if "latents" in self.sections or "prompts" in self.sections:
            self.num_frames = whole_number(self.num_frames, "--num_frames", 2, MAX_FRAMES)
            self.num_inference_steps = check_steps(self.num_inference_steps)
        if "latents" in self.sections:
            self.num_pairs = whole_number(self.num_pairs, "--num_pairs", 1, MAX_ROWS)
        if "prompts" in self.sections:
            whole_number(len(self.prompt_pairs), "number of --prompt_pairs", 1, MAX_ROWS)
            for pair in self.prompt_pairs:
                parts = [part.strip() for part in pair.split(",")]
                if len(parts) != 2 or not all(parts):
                    raise ValueError(f'--prompt_pairs takes pairs such as 3,8 or "one,seven", not {pair!r}')
        if "consistency" in self.sections:
            self.consistency_samples = whole_number(
                self.consistency_samples, "--consistency_samples", 1, MAX_CONSISTENCY_SAMPLES
            )
            whole_number(len(self.consistency_steps), "number of --consistency_steps", 1, MAX_CONSISTENCY_ROWS)
            self.consistency_steps = [check_steps(steps, "--consistency_steps") for steps in self.consistency_steps]
        for flag, prompt in (
            ("--latent_prompt", self.latent_prompt),
            ("--consistency_prompt", self.consistency_prompt),
        ):
            if prompt is not None and not prompt.strip():
                raise ValueError(f"{flag} is empty: give a digit such as 7, or leave it out (unconditional)")
        self.seed = check_seed(self.seed, span=self.LAST_SEED_OFFSET)


@dataclass
class InterpolateCommandSettings:
    """The command's own flags, beside ``InterpolationSettings``: which pipeline, where the figures go, on what
    device; not recorded in interpolation.json."""

    pipeline: Optional[str] = option(None, PIPELINE_HELP)
    output_dir: str = option("output/interpolation", "the figures and interpolation.json go here")
    device: str = option("auto", DEVICE_HELP)
    dtype: DtypeName = option("float32", "UNet/text-encoder dtype")


def parse_args(argv=None) -> Tuple[InterpolationSettings, InterpolateCommandSettings]:
    return parse_settings([InterpolationSettings, InterpolateCommandSettings], argv, description=__doc__)


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
