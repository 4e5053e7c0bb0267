"""DDIM latent-space figures for any pipeline (logic: pipeline_mnist_ddim/interpolation.py).

    python scripts/interpolate.py                                   # embedded default, all three figures
    python scripts/interpolate.py --sections consistency --consistency_steps 10 50 1000
    python scripts/interpolate.py --pipeline PATH_OR_HUB_ID --prompt_pairs 3,8 1,7 --num_frames 12

Writes into --output_dir (default output/interpolation):
slerp_latents.png (rows: pairs of latents, slerped, decoded with DDIM eta=0),
slerp_prompts.png (rows: pairs of prompts, embeddings slerped, one fixed latent),
consistency.png (rows: S; columns: the same latents) and interpolation.json.
"""

import argparse
import dataclasses
import json
import logging
import sys

from pipeline_mnist_ddim.cli import USER_ERRORS, check_writable_location, report
from pipeline_mnist_ddim.interpolation import InterpolationSettings, run_interpolation

SECTIONS = ("latents", "prompts", "consistency")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = InterpolationSettings()
    parser.add_argument("--pipeline", help="a pipeline folder or Hub id (default: the embedded one)")
    parser.add_argument("--output_dir", default="output/interpolation")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=d.sections)
    parser.add_argument("--num_frames", type=int, default=d.num_frames)
    parser.add_argument("--num_inference_steps", type=int, default=d.num_inference_steps)
    parser.add_argument("--num_pairs", type=int, default=d.num_pairs, help="latent pairs (rows) to interpolate")
    parser.add_argument("--latent_prompt", help="prompt for the latent strips (default: unconditional)")
    parser.add_argument("--prompt_pairs", nargs="+", default=d.prompt_pairs, help='e.g. 3,8 "one,seven"')
    parser.add_argument("--consistency_samples", type=int, default=d.consistency_samples)
    parser.add_argument("--consistency_steps", type=int, nargs="+", default=d.consistency_steps)
    parser.add_argument("--consistency_prompt", help="prompt for the consistency grid (default: unconditional)")
    parser.add_argument("--seed", type=int, default=d.seed)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    fields = {f.name for f in dataclasses.fields(InterpolationSettings)}
    settings = InterpolationSettings(**{k: v for k, v in vars(args).items() if k in fields})
    try:
        check_writable_location(args.output_dir)  # now, not after the sampling
        import torch

        from pipeline_mnist_ddim.folder_io import load_pipeline_folder

        # Weights may be stored in fp16; float32 runs on any device.
        pipe = load_pipeline_folder(args.pipeline, torch.float32)
        pipe.to("cuda" if torch.cuda.is_available() else "cpu")
        results = run_interpolation(pipe, settings, args.output_dir)
    except USER_ERRORS as err:  # bad paths, prompts and arguments: say what, no traceback
        return report(err)
    print(json.dumps({k: v for k, v in results.items() if k != "settings"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
