"""Pipeline vs reference loop timings: ``mnist-ddim-benchmark`` (pipeline_mnist_ddim/tools/commands/benchmark.py); --help lists the flags."""

import sys

from pipeline_mnist_ddim.tools.commands.benchmark import main


if __name__ == "__main__":
    sys.exit(main())
