"""Image grids laid out like torchvision's ``save_image`` (which this project does not depend on)."""

import math

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps


BORDER = 2  # pixels of black around and between the images, torchvision's default padding


def save_grid(images: torch.Tensor, path: str, nrow: int = 8) -> None:
    """(N, C, H, W) in [0, 1] -> a PNG grid of ``nrow`` columns with a 2-pixel black border, like torchvision's."""
    from diffusers.utils import make_image_grid  # imports diffusers (~1.5 s): not when a script only parses --help

    pixels = (images.detach().float().clamp(0, 1).cpu() * 255).round().byte()
    n, channels = pixels.shape[:2]
    rows = math.ceil(n / nrow)
    blanks = pixels.new_zeros((rows * nrow - n, *pixels.shape[1:]))  # the last row's empty cells
    # Each cell is its image with the border above and left of it; the grid then gets its right and bottom edge.
    cells = F.pad(torch.cat([pixels, blanks]), (BORDER, 0, BORDER, 0)).permute(0, 2, 3, 1).numpy()
    grid = make_image_grid([Image.fromarray(cell[..., 0] if channels == 1 else cell) for cell in cells], rows, nrow)
    grid = ImageOps.expand(grid, border=(0, 0, BORDER, BORDER), fill=0)
    (grid.convert("L") if channels == 1 else grid).save(path)
