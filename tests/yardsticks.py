"""Tolerances measured in the test itself, for comparisons of two code paths that compute the same math.

Bit-identity holds only for the same operations on the same tensors. Two paths that compute the same
math (weights reloaded from a file, so at other memory offsets; another batch layout; another kernel)
may round differently: on an AMD EPYC (AVX-512, no AMX) a reloaded UNet's first linear layer already
differs in its last bit from the in-memory one, which the Intel machine did not show. The yardstick is
the path's own float32 rounding: the same call with the networks in float64, against float32.
"""

import copy

import torch


def float32_rounding(pipe, **call) -> float:
    """Max abs difference between ``pipe(**call)`` and the same call with its networks in float64.

    The latents and the scheduler's update stay float32 in the pipeline either way: this measures how
    far the networks' float32 rounding moves this call's output, the scale of any reordered sum.
    """
    components = {name: copy.deepcopy(module) for name, module in pipe.components.items()}
    double = type(pipe)(**components)
    double.set_progress_bar_config(disable=True)
    for name in ("unet", "text_encoder"):
        if getattr(double, name, None) is not None:
            getattr(double, name).to(torch.float64)
            assert getattr(double, name).dtype == torch.float64, name  # else the yardstick would read 0
    with torch.no_grad():
        single, wide = pipe(**call).images, double(**call).images
    return (torch.as_tensor(single).double() - torch.as_tensor(wide).double()).abs().max().item()
