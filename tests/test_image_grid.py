"""Sample grids keep torchvision's save_image layout: a 2-pixel black border around and between images."""

import numpy as np
import torch
from PIL import Image

from pipeline_mnist_ddim.tools.image_grid import save_grid


def torchvision_layout(images: torch.Tensor, nrow: int) -> np.ndarray:
    """torchvision.utils.make_grid(padding=2, pad_value=0) written out, as uint8 (H, W, C)."""
    n, c, h, w = images.shape
    rows = -(-n // nrow)
    grid = np.zeros((rows * (h + 2) + 2, nrow * (w + 2) + 2, c), dtype=np.uint8)
    for i, image in enumerate(images):
        top, left = 2 + (i // nrow) * (h + 2), 2 + (i % nrow) * (w + 2)
        grid[top : top + h, left : left + w] = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return grid


def test_grid_pixels_follow_torchvision_layout_with_an_empty_last_cell(tmp_path):
    images = torch.rand(5, 1, 4, 6, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1  # clamped to [0, 1]
    save_grid(images, tmp_path / "grid.png", nrow=3)
    written = Image.open(tmp_path / "grid.png")
    assert written.mode == "L"
    np.testing.assert_array_equal(np.asarray(written), torchvision_layout(images, nrow=3)[..., 0])


def test_grid_of_colour_images_stays_rgb(tmp_path):
    images = torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    save_grid(images, tmp_path / "grid.png", nrow=2)
    written = Image.open(tmp_path / "grid.png")
    assert written.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(written), torchvision_layout(images, nrow=2))
