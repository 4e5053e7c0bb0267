"""The demo as a Hugging Face Space (Gradio SDK): this file is the Space's app.py.

The Space holds this file, requirements.txt, README.md (the Space card) and a copy of the
`pipeline_mnist_ddim/` package folder (which carries the embedded default pipeline). Set the
Space variable MNIST_DDIM_PIPELINE to a Hub id or folder to serve another converted pipeline.
"""

import os

from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder
from pipeline_mnist_ddim.tools.demo.app import build_demo, launch
from pipeline_mnist_ddim.tools.demo.limits import DemoLimits
from pipeline_mnist_ddim.tools.devices import pick_device


source = os.environ.get("MNIST_DDIM_PIPELINE") or None
device = pick_device("auto")
demo = build_demo(load_pipeline_folder(source).to(device), source=source, limits=DemoLimits(), device=str(device))

if __name__ == "__main__":
    launch(demo, host=None, port=None)  # Spaces set GRADIO_SERVER_NAME and GRADIO_SERVER_PORT
