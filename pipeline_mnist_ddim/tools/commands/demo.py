"""The web demo: sample, invert and interpolate digits in a browser (Gradio).

    pip install -e '.[demo]'
    mnist-ddim-demo                              # embedded default, http://127.0.0.1:7860
    mnist-ddim-demo --pipeline PATH_OR_REPO --host 0.0.0.0 --port 8080

(or python scripts/demo.py ...). The logic lives in pipeline_mnist_ddim/tools/demo.py; this parses arguments and launches.
"""

import logging
import math
import sys

from pipeline_mnist_ddim.tools.cli import parse_settings, quiet_on_ctrl_c, report
from pipeline_mnist_ddim.tools.settings import DemoOptions


def parse_args(argv=None) -> DemoOptions:
    (options,) = parse_settings([DemoOptions], argv, description=__doc__)
    return options


@quiet_on_ctrl_c
def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests to itself
    args = parse_args(argv)
    for name in ("port", "concurrency_limit", "max_images", "max_image_steps", "max_client_requests"):
        if getattr(args, name) < 1:
            print(f"error: --{name} must be at least 1, not {getattr(args, name)}", file=sys.stderr)
            return 2
    if not math.isfinite(args.max_seconds) or args.max_seconds <= 0:
        print(f"error: --max_seconds must be a positive number of seconds, not {args.max_seconds}", file=sys.stderr)
        return 2
    try:
        from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder
        from pipeline_mnist_ddim.tools.demo.app import build_demo, import_gradio, launch
        from pipeline_mnist_ddim.tools.demo.limits import DemoLimits
        from pipeline_mnist_ddim.tools.devices import pick_device, torch_dtype

        import_gradio()
        device = pick_device(args.device)
        pipe = load_pipeline_folder(args.pipeline, torch_dtype(args.dtype)).to(device)
        limits = DemoLimits(
            max_images=args.max_images,
            max_image_steps=args.max_image_steps,
            concurrency=args.concurrency_limit,
            max_seconds=args.max_seconds,
            max_client_requests=args.max_client_requests,
        )
        blocks = build_demo(pipe, source=args.pipeline, limits=limits, device=str(device))
    except (ImportError, ValueError, OSError) as err:  # Gradio missing, bad paths and arguments: say what
        return report(err)
    launch(blocks, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
