"""The command-line tools, one module each, installed as ``mnist-ddim-*`` (setup.cfg) and wrapped by scripts/.

Each parses its arguments before importing torch or diffusers, so ``--help`` answers at once.
"""
