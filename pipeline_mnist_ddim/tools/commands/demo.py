"""The web demo: sample, invert and interpolate digits in a browser (Gradio).

    pip install -e '.[demo]'
    mnist-ddim-demo                              # embedded default, http://127.0.0.1:7860
    mnist-ddim-demo --pipeline PATH_OR_REPO --host 0.0.0.0 --port 8080

(or python scripts/demo.py ...). The logic lives in pipeline_mnist_ddim/tools/demo/; this parses arguments and launches.
"""

import logging
import sys
from dataclasses import dataclass
from typing import Optional

from pipeline_mnist_ddim.tools.arguments import (
    DEVICE_HELP,
    PIPELINE_HELP,
    DtypeName,
    at_least,
    option,
    real_number,
    whole_number,
)
from pipeline_mnist_ddim.tools.cli import parse_settings, quiet_on_ctrl_c, report
from pipeline_mnist_ddim.tools.demo.limits import DemoLimits  # torch-free: the defaults of the limits


@dataclass
class DemoSettings:
    """What ``mnist-ddim-demo`` serves and its per-request limits (``demo.limits.DemoLimits``)."""

    pipeline: Optional[str] = option(None, PIPELINE_HELP)
    port: int = option(7860, "port to serve on")
    host: str = option("127.0.0.1", "0.0.0.0 to serve other machines")
    share: bool = option(False, "also serve through a temporary public gradio.live link")
    device: str = option("auto", DEVICE_HELP)
    dtype: DtypeName = option("float32", "UNet/text-encoder dtype")
    concurrency_limit: int = option(DemoLimits.concurrency, "jobs run at once, all tabs together")
    max_images: int = option(DemoLimits.max_images, "images per Sample request")
    max_image_steps: int = option(
        DemoLimits.max_image_steps, "network evaluations per request (images x steps, x 2 with guidance)"
    )
    max_seconds: float = option(
        DemoLimits.max_seconds, "wall time of one request; it is stopped at the next step after that"
    )
    max_client_requests: int = option(
        DemoLimits.max_client_requests, "requests one client (IP address) may start per 10 minutes"
    )

    def validate(self) -> None:
        """What needs no torch nor Gradio, checked before importing them: a ValueError naming the flag."""
        self.port = whole_number(self.port, "--port", 1, 65535)
        for flag in ("concurrency_limit", "max_images", "max_image_steps", "max_client_requests"):
            setattr(self, flag, at_least(getattr(self, flag), f"--{flag}", 1))
        self.max_seconds = real_number(self.max_seconds, "--max_seconds", 0, meaning=" seconds")
        if self.max_seconds == 0:
            raise ValueError("--max_seconds must be above 0: every request would be stopped at once")


def parse_args(argv=None) -> DemoSettings:
    (settings,) = parse_settings([DemoSettings], argv, description=__doc__)
    return settings


@quiet_on_ctrl_c
def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests to itself
    args = parse_args(argv)
    try:
        args.validate()  # before importing torch and Gradio
        from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder
        from pipeline_mnist_ddim.tools.demo.app import build_demo, import_gradio, launch
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
