"""Image grids like torchvision's ``save_image`` (which this project does not depend on)."""

import math

import torch
from PIL import Image


def save_grid(images: torch.Tensor, path: str, nrow: int = 8) -> None:
    """(N, C, H, W) in [0, 1] -> a PNG grid with a 2-pixel border, like torchvision's."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    grid = torch.zeros(c, rows * (h + 2) + 2, nrow * (w + 2) + 2)
    for i, image in enumerate(images):
        r, col = divmod(i, nrow)
        grid[:, 2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + col * (w + 2) : 2 + col * (w + 2) + w] = image
    array = (grid * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if c == 1 else array).save(path)
