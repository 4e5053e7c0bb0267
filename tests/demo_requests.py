"""What the demo tests send: a sample request with the defaults they share, and a drawn digit."""

import numpy as np


STEPS = 3


def request(
    demo, prompt="7 3", per_prompt=2, steps=STEPS, eta=0.0, guidance=1.0, negative="", seed=42, scheduler="DDIM"
):
    return demo.sample_request(prompt, per_prompt, steps, eta, guidance, negative, seed, scheduler)


def drawn_digit(dark_on_light=False, transparent=False):
    """A 280x280 canvas holding a vertical bar (a "1") off centre, as a sketchpad gives it."""
    canvas = np.zeros((280, 280, 4), dtype=np.uint8)
    canvas[40:200, 50:80] = (255, 255, 255, 255)
    if transparent:  # the sketchpad: black strokes on a transparent canvas
        canvas[..., :3] = 0
    elif dark_on_light:  # paper
        canvas[..., :3] = 255 - canvas[..., :3]
        canvas[..., 3] = 255
    else:
        canvas[..., 3] = 255
    return {"background": None, "layers": [], "composite": canvas}
