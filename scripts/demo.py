"""The web demo: ``mnist-ddim-demo`` (pipeline_mnist_ddim/tools/commands/demo.py); --help lists the flags."""

import sys

from pipeline_mnist_ddim.tools.commands.demo import main


if __name__ == "__main__":
    sys.exit(main())
