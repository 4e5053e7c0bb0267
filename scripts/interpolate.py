"""DDIM latent-space figures: ``mnist-ddim-interpolate`` (pipeline_mnist_ddim/tools/commands/interpolate.py); --help lists the flags."""

import sys

from pipeline_mnist_ddim.tools.commands.interpolate import main


if __name__ == "__main__":
    sys.exit(main())
