"""The DDIM paper's tables on MNIST: ``mnist-ddim-evaluate`` (pipeline_mnist_ddim/tools/commands/evaluate.py); --help lists the flags."""

import sys

from pipeline_mnist_ddim.tools.commands.evaluate import main


if __name__ == "__main__":
    sys.exit(main())
