"""Lesson 6's sampling script on the diffusers port.

    python scripts/sample_ddim.py                      # embedded default, seed 42, 50 DDIM steps, eta 0
    python scripts/sample_ddim.py --pipeline PATH_OR_REPO --guidance_scale 2 --prompts "7 seven 3"
    python scripts/sample_ddim.py --model_checkpoint gaussian_diffusion_ddpm-10000.pt --text_encoder openai/clip-vit-large-patch14

Writes unconditional_samples.png, conditional_samples.png (8x8 grids),
conditional_sample_prompts.txt and settings.json into --output_dir (default output/);
when that folder already holds a run, into output/run-N (or replace it with --overwrite).
"""

import argparse
import logging
import sys

from pipeline_mnist_ddim.cli import USER_ERRORS, report, sigterm_unwinds
from pipeline_mnist_ddim.sampling import DTYPE_CHOICES, SampleSettings, run


def parse_args(argv=None) -> SampleSettings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = SampleSettings()
    parser.add_argument("--pipeline", help="a converted pipeline folder or Hub id (default: the embedded one)")
    parser.add_argument("--model_checkpoint", help="a Lesson 5e checkpoint, converted in memory")
    parser.add_argument("--text_encoder", help="with --model_checkpoint: Hub id or folder of its text encoder")
    parser.add_argument("--compact_text_encoder", action="store_true",
                        help="with --model_checkpoint: keep only the encoder's outputs for the 20 prompts")  # fmt: skip
    parser.add_argument("--ema", action="store_true", help="with --model_checkpoint: use its EMA weights")
    parser.add_argument("--output_dir", default=defaults.output_dir)
    parser.add_argument("--overwrite", action="store_true", help="replace earlier outputs in --output_dir")
    parser.add_argument("--num_samples", type=int, default=defaults.num_samples)
    parser.add_argument("--num_inference_steps", type=int, default=defaults.num_inference_steps)
    parser.add_argument("--eta", type=float, default=defaults.eta)
    parser.add_argument("--guidance_scale", type=float, default=defaults.guidance_scale)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=defaults.dtype,
                        help="auto: bfloat16 weights on a CPU with native bf16 (AMX, AVX512-BF16), else float32")
    parser.add_argument("--prompts", help='prompts to cycle through, e.g. "7 seven 3" (default: random digits)')
    return SampleSettings(**vars(parser.parse_args(argv)))


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    settings = parse_args(argv)
    try:
        with sigterm_unwinds():  # a killed run removes its half-written file
            print(run(settings))
    except USER_ERRORS as err:  # bad paths, arguments and files, a full disk: say what, no traceback
        return report(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
