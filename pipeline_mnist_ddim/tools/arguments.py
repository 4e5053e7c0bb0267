"""What the tools' arguments share: ``option()`` for the settings dataclasses, the shared flags' help texts and
bounds, and one check per kind of value, each a ValueError naming the argument and what it accepts.

Free of torch, diffusers and numpy, so that ``--help`` and bad arguments answer at once. The command lines (each
command module's ``...Settings.validate()``), the web demo (``demo.limits.demo_input``) and the evaluation all check
with these; the pipeline keeps its own checks (it is remote code and cannot import the tools).
"""

import math
import numbers
from dataclasses import field
from typing import Literal

from pipeline_mnist_ddim.lesson.constants import NUM_TRAIN_TIMESTEPS


DTYPE_NAMES = ("float32", "float16", "bfloat16")  # devices.DTYPES maps them to torch dtypes
DtypeName = Literal[DTYPE_NAMES]  # type: ignore[valid-type]
DTYPE_CHOICES = ("auto",) + DTYPE_NAMES  # the sampler's: "auto" is devices.resolve_dtype

PIPELINE_HELP = "a converted pipeline folder or Hub id (None: the embedded default)"
DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps"

MAX_STEPS = NUM_TRAIN_TIMESTEPS  # any step count: the lesson's schedule has 1000 timesteps
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


def option(default=None, help: str = "", **kwargs):
    """A dataclass field with its ``--help`` text; ``default_factory`` for lists."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # True is an int to Python, not a count


def _is_integral(value) -> bool:
    """A finite number with a whole value: an int, or a float such as 3.0 (Gradio's numbers)."""
    return _is_number(value) and math.isfinite(value) and value == int(value)


def whole_number(value, name: str, low: int, high: int) -> int:
    """``value`` as an int from ``low`` to ``high``; a float with a whole value counts (Gradio's numbers)."""
    if not _is_integral(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, not {value}")
    return int(value)


def at_least(value, name: str, low: int) -> int:
    """``value`` as an int of at least ``low``, where the upper bound is checked later (e.g. by a loaded model)."""
    if not _is_integral(value) or value < low:
        raise ValueError(f"{name} must be a whole number of at least {low}, not {value}")
    return int(value)


def real_number(value, name: str, low: float, high: float = math.inf, meaning: str = "") -> float:
    """``value`` as a finite float from ``low`` to ``high`` (no upper bound by default); ``meaning`` follows the
    range in the message, e.g. `` (<= 1: no guidance)``."""
    if not _is_number(value) or not math.isfinite(value) or not low <= value <= high:
        accepted = f"a number from {low:g} to {high:g}" if math.isfinite(high) else f"a finite number >= {low:g}"
        raise ValueError(f"{name} must be {accepted}{meaning}, not {value}")
    return float(value)


def check_seed(seed, name: str = "--seed", span: int = 0) -> int:
    """``seed`` when torch can seed generators with every seed from it to ``seed + span``."""
    low, high = SEED_RANGE
    if not _is_integral(seed) or not low <= seed <= high - span:
        most = f"2**64 - 1 - {span}" if span else "2**64 - 1"
        reason = f"seeds from seed to seed + {span} are used" if span else "torch's seeds"
        raise ValueError(f"{name} must be a whole number from -2**63 to {most} ({reason}), not {seed}")
    return int(seed)


def check_steps(steps, name: str = "--num_inference_steps") -> int:
    """A step count S: 1 to the lesson's 1000 timesteps."""
    return whole_number(steps, name, 1, MAX_STEPS)


def check_eta(eta, name: str = "--eta") -> float:
    # For eta > 1, DDIM's sigma_t exceeds sqrt(1 - alpha_{t-1}) and the direction term's square root is undefined.
    return real_number(eta, name, 0, 1, " (0: deterministic DDIM, 1: DDPM-like)")


def check_guidance_scale(scale, name: str = "--guidance_scale") -> float:
    """As the pipeline: any finite scale >= 0, where <= 1 means no guidance (the lesson's sampling)."""
    return real_number(scale, name, 0, meaning=" (<= 1: no guidance)")
