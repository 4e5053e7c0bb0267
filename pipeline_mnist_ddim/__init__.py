"""mindiffusion Lesson 5e (text-conditional MNIST DDPM) and Lesson 6 (DDIM) in diffusers.

The product: :class:`MNISTDDIMPipeline` (``pipeline_mnist_ddim.py``), its UNet
:class:`MNISTUNet2DConditionModel` (``unet_mnist.py``) and the compact prompt-table text encoder
(``compact_text_encoder.py``), the files a pipeline folder carries as remote code; ``lesson/`` (the
original's facts, reference network and schedulers); ``conversion/`` (checkpoints to pipeline folders);
``default_pipeline/`` (the embedded model). ``tools/`` holds the command-line tools, which import the
product and never the reverse.
"""

import os


DEFAULT_PIPELINE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_pipeline")
ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")  # the digit classifier's weights

# Imported on first use: the command-line tools import this package, and their --help must not load torch.
_LAZY = {
    "MNISTDDIMPipeline": "pipeline_mnist_ddim.pipeline_mnist_ddim",
    "MNISTUNet2DConditionModel": "pipeline_mnist_ddim.unet_mnist",
    "CompactTextEncoder": "pipeline_mnist_ddim.compact_text_encoder",
}
__all__ = ["DEFAULT_PIPELINE_DIR", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
