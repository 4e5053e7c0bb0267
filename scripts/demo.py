"""The web demo: sample, invert and interpolate digits in a browser (Gradio).

    pip install -e '.[demo]'
    python scripts/demo.py                              # embedded default, http://127.0.0.1:7860
    python scripts/demo.py --pipeline PATH_OR_REPO --host 0.0.0.0 --port 8080

The logic lives in pipeline_mnist_ddim/demo.py; this script parses arguments and launches.
"""

import argparse
import logging
import sys

from pipeline_mnist_ddim.demo import DemoLimits
from pipeline_mnist_ddim.sampling import DTYPES, pick_device


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    limits = DemoLimits()
    parser.add_argument("--pipeline", help="a converted pipeline folder or Hub id (default: the embedded one)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--share", action="store_true", help="also serve through a temporary public gradio.live link")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--concurrency_limit", type=int, default=limits.concurrency, help="jobs run at once, all tabs together")
    parser.add_argument("--max_images", type=int, default=limits.max_images, help="images per Sample request")
    parser.add_argument("--max_image_steps", type=int, default=limits.max_image_steps,
                        help="network evaluations per request (images x steps, x 2 with guidance)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests to itself
    args = parse_args(argv)
    for name in ("port", "concurrency_limit", "max_images", "max_image_steps"):
        if getattr(args, name) < 1:
            print(f"error: --{name} must be at least 1, not {getattr(args, name)}", file=sys.stderr)
            return 2
    try:
        from pipeline_mnist_ddim.demo import build_demo, import_gradio, launch
        from pipeline_mnist_ddim.folder_io import load_pipeline_folder

        import_gradio()
        device = pick_device(args.device)
        pipe = load_pipeline_folder(args.pipeline, DTYPES[args.dtype]).to(device)
        limits = DemoLimits(max_images=args.max_images, max_image_steps=args.max_image_steps, concurrency=args.concurrency_limit)
        blocks = build_demo(pipe, source=args.pipeline, limits=limits, device=str(device))
    except (ImportError, ValueError, OSError) as err:  # Gradio missing, bad paths and arguments: say what
        print(f"error: {err}", file=sys.stderr)
        return 2
    launch(blocks, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
