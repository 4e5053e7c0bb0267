"""Reproduces the DDIM paper's MNIST-sized claims for any MNIST pipeline (logic of ``scripts/evaluate.py``).

- ``jobs``: one seeded job per image, the split across processes, the cache of finished cells.
- ``real_data``: the held-out and training digits, the classifier, the real-vs-real floors.
- ``sections``: the measurements (Table 1, guidance, unconditional, copying, inversion) and ``evaluate``.
- ``report``: the Markdown, the quality-vs-steps plot, the files written.
"""

from pipeline_mnist_ddim.tools.commands.evaluate import SECTIONS, EvaluationSettings  # its settings: the command's
from pipeline_mnist_ddim.tools.evaluation.jobs import process_state
from pipeline_mnist_ddim.tools.evaluation.report import results_markdown, write_outputs
from pipeline_mnist_ddim.tools.evaluation.sections import evaluate


__all__ = ["SECTIONS", "EvaluationSettings", "evaluate", "process_state", "results_markdown", "write_outputs"]
