"""Lesson 5e training: ``mnist-ddim-train`` (pipeline_mnist_ddim/tools/commands/train.py); --help lists the flags."""

import sys

from pipeline_mnist_ddim.tools.commands.train import main


if __name__ == "__main__":
    sys.exit(main())
