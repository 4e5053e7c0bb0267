"""Convert a Lesson 5e checkpoint into a pipeline folder: ``mnist-ddim-convert`` (pipeline_mnist_ddim/tools/commands/convert.py).

python convert_checkpoint.py --help
"""

import sys

from pipeline_mnist_ddim.tools.commands.convert import main


if __name__ == "__main__":
    sys.exit(main())
