"""The evaluation's digit classifier: ``mnist-ddim-train-classifier`` (pipeline_mnist_ddim/tools/commands/train_classifier.py)."""

import sys

from pipeline_mnist_ddim.tools.commands.train_classifier import main


if __name__ == "__main__":
    sys.exit(main())
