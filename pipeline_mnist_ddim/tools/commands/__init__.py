"""The command-line tools, one module each, installed as ``mnist-ddim-*`` (setup.cfg) and wrapped by scripts/.

Each module holds its settings dataclass(es), the flags, and its ``main``; what they share is in
``tools/arguments.py``. Each parses and checks its arguments before importing torch or diffusers, so
``--help`` and bad arguments answer at once.
"""
