"""Sampling the tiny pipeline in the tests of its behaviour: a few steps, tensors out."""

import torch


STEPS = 3  # behaviour, not quality: a few steps suffice


def sample(pipe, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("output_type", "pt")
    return pipe(**kwargs).images


def seeded(seed):
    return torch.Generator().manual_seed(seed)
