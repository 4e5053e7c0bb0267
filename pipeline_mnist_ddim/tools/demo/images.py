"""The web demo's pictures: digits drawn or uploaded read as MNIST digits, samples and latents shown enlarged."""

import math
from typing import List

import numpy as np
import torch
from PIL import Image

from pipeline_mnist_ddim.tools.demo.limits import DISPLAY_SIZE, MAX_DIGIT_SIDE, DemoInputError


def to_display(images, size: int = DISPLAY_SIZE) -> List[Image.Image]:
    """Images ((N, C, H, W) in [0, 1], or PIL) -> grey PIL images enlarged to ``size`` with nearest neighbour."""
    if isinstance(images, torch.Tensor):
        arrays = (images.detach().float().clamp(0, 1).cpu() * 255).round().byte()
        images = [Image.fromarray(a[0].numpy()) for a in arrays]
    return [image.convert("L").resize((size, size), Image.NEAREST) for image in images]


def latent_to_display(latents: torch.Tensor) -> torch.Tensor:
    """x_T ~ N(0, I) shown with -3 sigma black and +3 sigma white."""
    return (latents.float() / 6 + 0.5).clamp(0, 1)


def shrunk(image, side: int = MAX_DIGIT_SIDE):
    """``image`` (PIL or array) at most ``side`` pixels wide and high, before anything converts it to float32
    (a 6000x6000 upload would take 576 MB as float32 RGBA; shrunk, 4 MB)."""
    if isinstance(image, Image.Image):
        if max(image.size) > side:  # box-averaged by a whole factor into a new, small image (no full-size copy)
            image = image.reduce(math.ceil(max(image.size) / side))
        return image
    array = np.asarray(image)
    if array.ndim >= 2 and max(array.shape[:2]) > side:
        step = math.ceil(max(array.shape[:2]) / side)
        array = array[::step, ::step]  # every step-th pixel: a view, no copy of the large array
    return array


def digit_from_image(image) -> torch.Tensor:
    """A drawn or uploaded digit -> (1, 1, 32, 32) in [0, 1], white on black and framed like MNIST.

    Accepts what Gradio's Sketchpad/Image give (an editor dict with "composite", a numpy array or a
    PIL image). Ink is the alpha channel where the canvas is transparent, else the grey level, inverted
    when the picture is mostly light (a dark digit on paper). As MNIST: the digit's bounding box is
    scaled to fit 20x20, centred by its centre of mass in 28x28, then resized to 32x32 as the lesson's
    data (bilinear).
    """
    if isinstance(image, dict):
        image = image.get("composite") if image.get("composite") is not None else image.get("background")
    if image is None:
        raise DemoInputError("draw a digit on the canvas or upload an image first")
    image = shrunk(image)
    array = np.asarray(image.convert("RGBA") if isinstance(image, Image.Image) else image, dtype=np.float32)
    if array.max() > 1:
        array = array / 255.0
    if array.ndim == 2:
        grey, alpha = array, None
    elif array.ndim == 3 and array.shape[2] in (1, 3, 4):
        grey = array[..., :3].mean(axis=2) if array.shape[2] >= 3 else array[..., 0]
        alpha = array[..., 3] if array.shape[2] == 4 else None
    else:
        raise DemoInputError(f"expected a grey or colour image, got an array of shape {array.shape}")
    if alpha is not None and alpha.min() < 0.99:
        ink = alpha
    else:
        ink = 1 - grey if grey.mean() > 0.5 else grey
    if ink.max() < 0.1:
        raise DemoInputError("the image is empty: draw a digit (or upload one) first")
    rows, cols = np.nonzero(ink > 0.1 * ink.max())
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = 20 / max(ink.shape)
    height, width = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    box = np.asarray(Image.fromarray(ink.astype(np.float32)).resize((width, height), Image.BILINEAR))
    box = box.clip(0, 1)
    total = box.sum()
    centre_y = (box.sum(axis=1) * np.arange(height)).sum() / total
    centre_x = (box.sum(axis=0) * np.arange(width)).sum() / total
    top = int(np.clip(round(14 - centre_y), 0, 28 - height))
    left = int(np.clip(round(14 - centre_x), 0, 28 - width))
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[top : top + height, left : left + width] = box
    digit_8bit = Image.fromarray((digit * 255).round().astype(np.uint8))
    digit_32 = np.asarray(digit_8bit.resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(digit_32)[None, None]


def strip(images: torch.Tensor, size: int = DISPLAY_SIZE) -> Image.Image:
    """Frames side by side, each enlarged to ``size``, 2 black pixels apart."""
    tiles = to_display(images, size)
    canvas = Image.new("L", (len(tiles) * (size + 2) - 2, size), 0)
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (i * (size + 2), 0))
    return canvas
