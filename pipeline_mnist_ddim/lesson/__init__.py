"""The lesson's fixed facts: its noise schedule and the twenty prompts it knows.

Lesson 5e trains on linear betas over 1000 steps and prompts each digit as its word or its
numeral ("seven" or "7"). The schedulers, the text encoder's vocabulary, training, sampling
and the evaluation all take them from here; so does the reference network (the test oracle).
The constants live in ``constants.py``; torch is imported only by the functions below, so that
the torch-free command-line tools can import ``pipeline_mnist_ddim.lesson.constants``.
"""

from typing import TYPE_CHECKING, List, Optional, Sequence

from pipeline_mnist_ddim.lesson.constants import (  # noqa: F401  (the lesson's facts, importable from here)
    LESSON_PROMPTS,
    LESSON_TEXT_ENCODER,
    NUM_TRAIN_TIMESTEPS,
    TEXT_LABELS,
)


if TYPE_CHECKING:
    import torch


def lesson_betas(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> "torch.Tensor":
    """Linear betas 1e-4..0.02, built in float64 and used in float32 as the lesson does."""
    import torch

    scale = 1000 / num_train_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_train_timesteps, dtype=torch.float64).float()


def labels_to_prompts(labels: Sequence[int], generator: Optional["torch.Generator"] = None) -> List[str]:
    """Each label becomes its word or its numeral at random, as in Lesson 5e."""
    import torch

    choices = torch.randint(0, 2, (len(labels),), generator=generator).tolist()
    return [TEXT_LABELS[int(label)][choice] for label, choice in zip(labels, choices)]
