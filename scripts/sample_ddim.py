"""Lesson 6's sampling script: ``mnist-ddim-sample`` (pipeline_mnist_ddim/tools/commands/sample.py); --help lists the flags."""

import sys

from pipeline_mnist_ddim.tools.commands.sample import main


if __name__ == "__main__":
    sys.exit(main())
