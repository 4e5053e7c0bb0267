"""mindiffusion Lesson 5e (text-conditional MNIST DDPM) and Lesson 6 (DDIM) in diffusers."""

import os


DEFAULT_PIPELINE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_pipeline")
