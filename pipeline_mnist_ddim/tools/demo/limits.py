"""The web demo's inputs and limits: what a request may ask, checked before any work (`DemoInputError`)."""

import collections
import contextlib
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence


# Display size of the 32x32 digits (nearest neighbour: the pixels stay visible).
DISPLAY_SIZE = 128
GUIDANCE_SLIDER_MAX = 10.0  # the page's slider; from Python any scale >= 0 is accepted (tools.arguments)
QUEUE_ID = "pipeline"

# Label shown in the page -> diffusers scheduler class, each made with `from_config(pipe.scheduler.config)`
# so that it keeps the lesson's betas and epsilon prediction.
SCHEDULERS = {
    "DDIM": "DDIMScheduler",
    "DDPM": "DDPMScheduler",
    "DPM-Solver++ (multistep)": "DPMSolverMultistepScheduler",
    "UniPC (multistep)": "UniPCMultistepScheduler",
    "PNDM": "PNDMScheduler",
    "Euler": "EulerDiscreteScheduler",
    "Euler ancestral": "EulerAncestralDiscreteScheduler",
    "Heun": "HeunDiscreteScheduler",
}
# Network evaluations per step, where a scheduler needs more than one (Heun: a predictor and a corrector).
EVALUATIONS_PER_STEP = {"Heun": 2}
INVERSION_STEPS = (10, 20, 50, 100, 200, 1000)


class DemoInputError(ValueError):
    """A request the demo refuses; its message is shown in the page as is."""


@dataclass(frozen=True)
class DemoLimits:
    """Per-request caps, so that one visitor cannot occupy a small CPU for long."""

    max_images: int = 32  # images per Sample request
    max_image_steps: int = 2000  # images x steps (x 2 with guidance, x 2 for Heun): network evaluations
    max_frames: int = 16  # images in an interpolation strip
    concurrency: int = 1  # jobs running at once, all tabs together
    max_queue: int = 16  # waiting jobs; further visitors are told the queue is full
    max_seconds: float = 120.0  # wall time of one request; it is stopped at the next step after that
    max_client_requests: int = 4  # requests one client (IP address) may start per client_window
    client_window: float = 600.0  # seconds
    max_upload_bytes: int = 5 * 1024 * 1024  # an uploaded file (Gradio refuses larger ones unread)
    max_upload_pixels: int = 4096 * 4096  # an uploaded image, decoded (PIL refuses larger ones)


# Uploads are shrunk to this side before any float conversion: the digit ends up 20x20 anyway.
MAX_DIGIT_SIDE = 512


class Deadline:
    """Raises `DemoInputError` once ``seconds`` have passed since it was made; `check` is cheap, call it often."""

    def __init__(self, seconds: float):
        self.seconds, self.started = seconds, time.monotonic()

    def check(self) -> None:
        if time.monotonic() - self.started > self.seconds:
            raise DemoInputError(
                f"stopped after {self.seconds:g} s, this demo's limit per request: ask for fewer images or steps"
            )


class ClientLimiter:
    """At most ``max_requests`` requests started per client in any ``window`` seconds, one at a time.

    Checked when a job starts: Gradio queues jobs before any code of ours runs, so a client's surplus jobs
    stay in the queue, but each is refused at once when its turn comes instead of running.
    """

    def __init__(self, max_requests: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.max_requests, self.window, self.clock = max_requests, window, clock
        self.started: Dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.running: Dict[str, int] = collections.Counter()
        self.lock = threading.Lock()

    def admit(self, client: Optional[str]):
        """A context manager for one request of ``client`` (None: not limited, e.g. called from Python)."""
        limiter = self

        class Admission:
            def __enter__(self):
                if client is None:
                    return self
                with limiter.lock:
                    now = limiter.clock()
                    times = limiter.started[client]
                    while times and now - times[0] >= limiter.window:
                        times.popleft()
                    if limiter.running[client]:
                        raise DemoInputError("your previous request is still running: wait for it to finish")
                    if len(times) >= limiter.max_requests:
                        wait = math.ceil(limiter.window - (now - times[0]))
                        raise DemoInputError(
                            f"this demo takes at most {limiter.max_requests} requests per visitor every "
                            f"{limiter.window:g} s: try again in {wait} s"
                        )
                    times.append(now)
                    limiter.running[client] += 1
                return self

            def __exit__(self, *exc):
                if client is not None:
                    with limiter.lock:
                        limiter.running[client] -= 1
                return False

        return Admission()


# ---------------------------------------------------------------------------- inputs


def parse_prompts(text: Optional[str], accepted_words: Optional[Sequence[str]] = None) -> List[str]:
    """``"7 seven 3"`` -> ``["7", "seven", "3"]`` (spaces or commas between prompts); empty -> ``[]``.

    With ``accepted_words`` (a word-level tokenizer's vocabulary), an unknown word is refused here,
    before any work, with the words that are accepted.
    """
    prompts = [word.lower() for word in re.split(r"[\s,]+", text or "") if word]
    if accepted_words is not None:
        unknown = [word for word in prompts if word not in accepted_words]
        if unknown:
            raise DemoInputError(
                f"unknown word{'s' if len(unknown) > 1 else ''} {', '.join(repr(w) for w in unknown)}: "
                f"this model knows {' '.join(accepted_words)}"
            )
    return prompts


def parse_single_prompt(text: Optional[str], accepted_words: Optional[Sequence[str]], name: str) -> Optional[str]:
    """One prompt (or None when empty), e.g. a negative prompt or an interpolation end."""
    prompts = parse_prompts(text, accepted_words)
    if len(prompts) > 1:
        raise DemoInputError(f"{name} takes one digit, not {len(prompts)} ({' '.join(prompts)})")
    return prompts[0] if prompts else None


@contextlib.contextmanager
def demo_input() -> Iterator[None]:
    """Turns a refusal of the shared argument checks (``tools.arguments``, a ValueError naming the input) into a
    `DemoInputError`, the message the page shows."""
    try:
        yield
    except DemoInputError:
        raise
    except ValueError as err:
        raise DemoInputError(str(err)) from None


def check_cost(limits: DemoLimits, images: int, steps: int, factor: int = 1, what: str = "") -> None:
    """Refuses requests over ``limits.max_image_steps`` network evaluations, saying what to reduce."""
    cost = images * steps * factor
    if cost > limits.max_image_steps:
        extra = f" x {factor} ({what})" if factor > 1 else ""
        raise DemoInputError(
            f"{images} image{'s' if images != 1 else ''} x {steps} steps{extra} = {cost} network evaluations "
            f"is over this demo's limit of {limits.max_image_steps} per request: use fewer images or steps"
        )
