"""The web demo (logic of ``scripts/demo.py``): sample, invert and interpolate digits in a browser.

Three tabs on one pipeline, built with Gradio (imported lazily: the core install does not need it):

- **Sample**: prompts, images per prompt, steps S, eta, guidance, negative prompt, seed, scheduler;
  a gallery captioned with each image's prompt, progress "step k of S" from `callback_on_step_end`,
  and the Python call that reproduces the gallery exactly.
- **Invert**: a drawn or uploaded digit, encoded to its DDIM latent x_T with `pipe.invert` and
  decoded back, for several S side by side with the reconstruction error.
- **Interpolate**: a slerp strip between two seeds' latents, or between two prompts at one latent.

The functions below take plain Python values and raise `DemoInputError` (a `ValueError`) on bad
input; the Gradio handlers turn that into `gr.Error`, a readable message in the page. Every event
shares one queue (``concurrency_id="pipeline"``) limited to `DemoLimits.concurrency` jobs at a time,
and each request is capped in size (images x steps), in wall time (`DemoLimits.max_seconds`, checked at
every step) and per client (`DemoLimits.max_client_requests` started per `client_window` seconds, so
that one visitor filling the queue is refused as each of their jobs comes up, in no time). Uploads are
capped in bytes (Gradio's ``max_file_size``) and pixels (PIL's decompression-bomb limit), and an
uploaded image is shrunk before it is converted to float32.
"""

import collections
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from pipeline_mnist_ddim.tools.interpolation import interpolate_latents, interpolate_prompts, seeded_latent


# Display size of the 32x32 digits (nearest neighbour: the pixels stay visible).
DISPLAY_SIZE = 128
MAX_STEPS = 1000
MAX_SEED = 2**63 - 1
MAX_GUIDANCE = 10.0
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


def whole_number(value, name: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high] (Gradio gives floats, or None for a cleared box)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number != int(number) or not low <= number <= high:
        raise DemoInputError(f"{name} must be a whole number from {low} to {high}, not {value}")
    return int(number)


def real_number(value, name: str, low: float, high: float, meaning: str = "") -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or not low <= number <= high:
        raise DemoInputError(f"{name} must be a number from {low:g} to {high:g}{meaning}, not {value}")
    return number


def check_seed(seed, name: str = "seed") -> int:
    return whole_number(seed, name, 0, MAX_SEED)


def check_steps(steps, name: str = "steps") -> int:
    return whole_number(steps, name, 1, MAX_STEPS)


def check_cost(limits: DemoLimits, images: int, steps: int, factor: int = 1, what: str = "") -> None:
    """Refuses requests over ``limits.max_image_steps`` network evaluations, saying what to reduce."""
    cost = images * steps * factor
    if cost > limits.max_image_steps:
        extra = f" x {factor} ({what})" if factor > 1 else ""
        raise DemoInputError(
            f"{images} image{'s' if images != 1 else ''} x {steps} steps{extra} = {cost} network evaluations "
            f"is over this demo's limit of {limits.max_image_steps} per request: use fewer images or steps"
        )


# ---------------------------------------------------------------------------- images


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


# ---------------------------------------------------------------------------- the demo's work


@dataclass
class SampleRequest:
    """What the Sample tab asks for, checked; ``prompts`` empty means unconditional."""

    prompts: List[str]
    images_per_prompt: int
    num_inference_steps: int
    eta: float
    guidance_scale: float
    negative_prompt: Optional[str]
    seed: int
    scheduler: str

    @property
    def num_images(self) -> int:
        return len(self.prompts) * self.images_per_prompt if self.prompts else self.images_per_prompt

    def pipeline_kwargs(self) -> Dict:
        """The pipeline call's arguments, less the generator (made fresh from ``seed`` for each call)."""
        kwargs: Dict = {}
        if self.prompts:
            kwargs.update(prompt=list(self.prompts), num_images_per_prompt=self.images_per_prompt)
        else:
            kwargs.update(batch_size=self.images_per_prompt)
        kwargs.update(num_inference_steps=self.num_inference_steps, eta=self.eta, guidance_scale=self.guidance_scale)
        if self.negative_prompt is not None:  # only when asked: the pipeline's default is the zero context
            kwargs.update(negative_prompt=self.negative_prompt)
        return kwargs

    def captions(self) -> List[str]:
        if not self.prompts:
            return [f"unconditional #{i + 1}" for i in range(self.num_images)]
        return [prompt for prompt in self.prompts for _ in range(self.images_per_prompt)]


class MNISTDemo:
    """The demo's behaviour on one pipeline, independent of Gradio.

    Args:
        pipe: an `MNISTDDIMPipeline` (any device/dtype).
        source: where `pipe` came from, for the reproduction code (a folder or Hub id); None is the
            embedded default.
        limits: per-request caps.
        device: the device name to show in the reproduction code when it is not the CPU.
    """

    def __init__(
        self, pipe, source: Optional[str] = None, limits: DemoLimits = DemoLimits(), device: Optional[str] = None
    ):
        self.pipe = pipe
        self.source = source
        self.limits = limits
        self.device = device
        self.clients = ClientLimiter(limits.max_client_requests, limits.client_window)
        pipe.set_progress_bar_config(disable=True)
        self.accepted_words = pipe.accepted_words() if pipe.text_encoder is not None else None

    # -------------------------------------------------------------- shared helpers

    def with_scheduler(self, name: str):
        """A pipeline sharing this one's weights, with its own scheduler (so requests never share state)."""
        if name not in SCHEDULERS:
            raise DemoInputError(f"unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}")
        import diffusers

        scheduler_class = getattr(diffusers, SCHEDULERS[name])
        components = dict(self.pipe.components, scheduler=scheduler_class.from_config(self.pipe.scheduler.config))
        view = type(self.pipe)(**components)
        view.set_progress_bar_config(disable=True)
        return view

    def prompts(self, text: Optional[str]) -> List[str]:
        prompts = parse_prompts(text, self.accepted_words)
        if prompts and self.pipe.text_encoder is None:
            raise DemoInputError("this pipeline has no text encoder: leave the prompt empty to sample unconditionally")
        return prompts

    def deadline(self) -> Deadline:
        return Deadline(self.limits.max_seconds)

    @staticmethod
    def step_callback(on_step: Optional[Callable[[int, int], None]], deadline: Optional[Deadline] = None):
        """`callback_on_step_end` that reports "step k of S" (S: the scheduler's actual timestep count) and
        stops the request once its wall time is over."""

        def callback(pipe, step, timestep, callback_kwargs):
            if on_step is not None:
                on_step(step + 1, len(pipe.scheduler.timesteps))
            if deadline is not None:
                deadline.check()
            return {}

        return callback

    # -------------------------------------------------------------- Sample

    def sample_request(
        self,
        prompt_text,
        images_per_prompt,
        num_inference_steps,
        eta,
        guidance_scale,
        negative_prompt_text,
        seed,
        scheduler,
    ) -> SampleRequest:
        """Checks the Sample tab's inputs; raises `DemoInputError` with what to change."""
        prompts = self.prompts(prompt_text)
        images_per_prompt = whole_number(images_per_prompt, "images per prompt", 1, self.limits.max_images)
        steps = check_steps(num_inference_steps)
        eta = real_number(eta, "eta", 0, 1, " (0: deterministic DDIM, 1: DDPM-like)")
        guidance_scale = real_number(guidance_scale, "guidance scale", 1, MAX_GUIDANCE, " (1: no guidance)")
        negative = parse_single_prompt(negative_prompt_text, self.accepted_words, "the negative prompt")
        if negative is not None and (guidance_scale <= 1 or not prompts):
            raise DemoInputError("a negative prompt acts through guidance: give a prompt and a guidance scale above 1")
        if guidance_scale > 1 and not prompts:
            raise DemoInputError("guidance needs a prompt: type a digit, or set the guidance scale to 1")
        if scheduler not in SCHEDULERS:
            raise DemoInputError(f"unknown scheduler {scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
        request = SampleRequest(
            prompts, images_per_prompt, steps, eta, guidance_scale, negative, check_seed(seed), scheduler
        )
        if request.num_images > self.limits.max_images:
            raise DemoInputError(
                f"{request.num_images} images is over this demo's limit of {self.limits.max_images} per request: "
                "ask for fewer images per prompt or fewer prompts"
            )
        factor = (2 if guidance_scale > 1 else 1) * EVALUATIONS_PER_STEP.get(scheduler, 1)
        reasons = " and ".join(
            r for r, on in (("guidance", guidance_scale > 1), (scheduler, scheduler in EVALUATIONS_PER_STEP)) if on
        )
        check_cost(self.limits, request.num_images, steps, factor, reasons)
        return request

    def sample(
        self, request: SampleRequest, on_step: Optional[Callable[[int, int], None]] = None
    ) -> List[Image.Image]:
        """The images of a checked request, at the pipeline's 32x32 (PIL, grey)."""
        pipe = self.with_scheduler(request.scheduler)
        generator = torch.Generator().manual_seed(request.seed)  # on the CPU: the same images on any device
        callback = self.step_callback(on_step, self.deadline())
        return pipe(**request.pipeline_kwargs(), generator=generator, callback_on_step_end=callback).images

    def reproduction_code(self, request: SampleRequest) -> str:
        """Python that gives exactly this request's images (the gallery shows them enlarged)."""
        scheduler_class = SCHEDULERS[request.scheduler]
        lines = ["import torch", "from diffusers import DiffusionPipeline"]
        swap = scheduler_class != type(self.pipe.scheduler).__name__
        if swap:
            lines[-1] += f", {scheduler_class}"
        if self.source is None:
            lines.append("from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR  # the folder shipped in the package")
            source = "DEFAULT_PIPELINE_DIR"
        else:  # a local folder by absolute path, so the code runs from anywhere
            source = repr(os.path.abspath(self.source) if os.path.isdir(self.source) else self.source)
        dtype = self.pipe.unet.dtype
        dtype_arg = "" if dtype == torch.float32 else f", torch_dtype={dtype}"
        lines += ["", f"pipe = DiffusionPipeline.from_pretrained({source}, trust_remote_code=True{dtype_arg})"]
        if self.device not in (None, "cpu"):
            lines.append(f"pipe = pipe.to({self.device!r})")
        if swap:
            lines.append(f"pipe.scheduler = {scheduler_class}.from_config(pipe.scheduler.config)")
        lines.append("images = pipe(")
        lines += [f"    {key}={value!r}," for key, value in request.pipeline_kwargs().items()]
        lines += [f"    generator=torch.Generator().manual_seed({request.seed}),", ").images"]
        return "\n".join(lines) + "\n"

    # -------------------------------------------------------------- Invert

    def inversion_request(self, image, prompt_text, steps: Sequence) -> Tuple[torch.Tensor, Optional[str], List[int]]:
        if not steps:
            raise DemoInputError(f"choose at least one number of steps S ({', '.join(map(str, INVERSION_STEPS))})")
        steps = sorted({check_steps(s, "S") for s in steps})
        prompt = parse_single_prompt(prompt_text, self.accepted_words, "the prompt")
        if prompt is not None and self.pipe.text_encoder is None:
            raise DemoInputError("this pipeline has no text encoder: leave the prompt empty")
        # Encoding and decoding: S network evaluations each.
        cost = 2 * sum(steps)
        if cost > self.limits.max_image_steps:
            raise DemoInputError(
                f"inverting and reconstructing with S = {', '.join(map(str, steps))} takes {cost} network evaluations, "
                f"over this demo's limit of {self.limits.max_image_steps} per request: choose fewer or smaller S"
            )
        return digit_from_image(image), prompt, steps

    def invert(
        self,
        digit: torch.Tensor,
        prompt: Optional[str],
        steps: Sequence[int],
        on_step: Optional[Callable[[int, int], None]] = None,
    ) -> List[Dict]:
        """For each S: the latent x_T of ``digit`` (1, 1, 32, 32), its reconstruction and their MSE."""
        pipe = self.with_scheduler("DDIM")
        done, total = 0, 2 * sum(steps)
        deadline = self.deadline()

        def count(step, _):
            if on_step is not None:
                on_step(done + step, total)

        results = []
        for s in steps:
            deadline.check()  # pipe.invert takes no callback: checked between its calls
            if on_step is not None:  # pipe.invert takes no callback: report the count before it
                on_step(done, total)
            latent = pipe.invert(digit, prompt=prompt, num_inference_steps=s)
            done += s
            call = dict(prompt=prompt) if prompt is not None else dict(batch_size=1)
            reconstruction = (
                pipe(
                    **call,
                    latents=latent,
                    num_inference_steps=s,
                    eta=0.0,
                    output_type="pt",
                    callback_on_step_end=self.step_callback(count, deadline),
                )
                .images.float()
                .cpu()
            )
            done += s
            mse = float(((reconstruction - digit) ** 2).mean())
            results.append({"steps": s, "latent": latent.float().cpu(), "reconstruction": reconstruction, "mse": mse})
        return results

    # -------------------------------------------------------------- Interpolate

    def interpolation_request(
        self, mode, seed_a, seed_b, prompt_a_text, prompt_b_text, num_frames, num_inference_steps
    ):
        if mode not in ("seeds", "prompts"):
            raise DemoInputError(f"interpolate between 'seeds' or 'prompts', not {mode!r}")
        num_frames = whole_number(num_frames, "frames", 2, self.limits.max_frames)
        steps = check_steps(num_inference_steps)
        seed_a = check_seed(seed_a, "seed A")
        seed_b = check_seed(seed_b, "seed B") if mode == "seeds" else None
        prompt_a = parse_single_prompt(prompt_a_text, self.accepted_words, "prompt A")
        prompt_b = parse_single_prompt(prompt_b_text, self.accepted_words, "prompt B")
        if (prompt_a or prompt_b) and self.pipe.text_encoder is None:
            raise DemoInputError("this pipeline has no text encoder: leave the prompts empty")
        if mode == "prompts" and (prompt_a is None or prompt_b is None):
            raise DemoInputError("interpolating between prompts needs both prompt A and prompt B")
        check_cost(self.limits, num_frames, steps)
        return dict(
            mode=mode,
            seed_a=seed_a,
            seed_b=seed_b,
            prompt_a=prompt_a,
            prompt_b=prompt_b,
            num_frames=num_frames,
            num_inference_steps=steps,
        )

    def interpolate(self, request: Dict) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) decodes along the slerp: (num_frames, C, H, W) in [0, 1].

        Through `interpolation.py`'s helpers (those of `scripts/interpolate.py`); their progress bar is
        the pipeline's, which the page follows (``track_tqdm``).
        """
        pipe = self.with_scheduler("DDIM")
        pipe.set_progress_bar_config(disable=False, desc="interpolating", leave=False)
        frames, steps = request["num_frames"], request["num_inference_steps"]
        latent_a = seeded_latent(pipe, request["seed_a"])
        callback = self.step_callback(None, self.deadline())
        if request["mode"] == "seeds":
            latent_b = seeded_latent(pipe, request["seed_b"])
            return interpolate_latents(pipe, latent_a, latent_b, frames, steps, request["prompt_a"], callback)
        return interpolate_prompts(pipe, request["prompt_a"], request["prompt_b"], latent_a, frames, steps, callback)


def strip(images: torch.Tensor, size: int = DISPLAY_SIZE) -> Image.Image:
    """Frames side by side, each enlarged to ``size``, 2 black pixels apart."""
    tiles = to_display(images, size)
    canvas = Image.new("L", (len(tiles) * (size + 2) - 2, size), 0)
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (i * (size + 2), 0))
    return canvas


# ---------------------------------------------------------------------------- Gradio


def import_gradio():
    """Gradio, with its usage analytics (network calls) off; a clear message when it is not installed."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as err:
        raise ImportError("the demo needs Gradio: pip install -e '.[demo]'") from err
    return gradio


INTRO = """# MNIST DDIM: Lesson 5e's digits, sampled with Lesson 6's DDIM in diffusers
Type digits as words or numerals ("7 seven 3"; empty: unconditional) and press **Generate**.
With eta = 0, DDIM is deterministic: the same seed gives the same digits at any step count S.
"""


class GradioHandlers:
    """The events' functions: `MNISTDemo`'s work with Gradio's progress, bad input as `gr.Error`."""

    def __init__(self, demo: MNISTDemo):
        self.demo, self.gr = demo, import_gradio()

    @staticmethod
    def reporter(progress):
        if progress is None:
            return None
        return lambda step, total: progress((step, total), desc=f"step {step} of {total}")

    def error(self, err: Exception):
        return self.gr.Error(str(err), print_exception=False)

    def sample(
        self, prompt_text, per_prompt, steps, eta, guidance, negative, seed, scheduler, progress=None, client=None
    ):
        """-> (gallery of (image, prompt), reproduction code)"""
        try:
            request = self.demo.sample_request(
                prompt_text, per_prompt, steps, eta, guidance, negative, seed, scheduler
            )
            with self.demo.clients.admit(client):
                images = self.demo.sample(request, self.reporter(progress))
        except ValueError as err:  # ours, or the pipeline's own checks: a message in the page
            raise self.error(err) from err
        return list(zip(to_display(images), request.captions())), self.demo.reproduction_code(request)

    def invert(self, image, prompt_text, steps, progress=None, client=None):
        """-> (gallery: the input, then per S its latent and reconstruction; a Markdown table of MSE by S)"""
        try:
            digit, prompt, steps = self.demo.inversion_request(image, prompt_text, steps)
            with self.demo.clients.admit(client):
                results = self.demo.invert(digit, prompt, steps, self.reporter(progress))
        except ValueError as err:
            raise self.error(err) from err
        gallery = [(to_display(digit)[0], "input (32x32, as MNIST)")]
        rows = ["| S | reconstruction MSE |", "|---:|---:|"]
        for r in results:
            gallery.append((to_display(latent_to_display(r["latent"]))[0], f"S={r['steps']}: latent x_T"))
            gallery.append((to_display(r["reconstruction"])[0], f"S={r['steps']}: reconstruction, MSE {r['mse']:.5f}"))
            rows.append(f"| {r['steps']} | {r['mse']:.6f} |")
        return gallery, "\n".join(rows)

    def interpolate(self, mode, seed_a, seed_b, prompt_a, prompt_b, frames, steps, progress=None, client=None):
        """-> the strip, one PIL image"""
        try:
            request = self.demo.interpolation_request(mode, seed_a, seed_b, prompt_a, prompt_b, frames, steps)
            with self.demo.clients.admit(client):
                images = self.demo.interpolate(request)
        except ValueError as err:
            raise self.error(err) from err
        return strip(images)


def client_of(request) -> Optional[str]:
    """The client's address as the server saw it (behind a proxy, the proxy's; then the session)."""
    if request is None:
        return None
    host = getattr(getattr(request, "client", None), "host", None)
    return host or getattr(request, "session_hash", None)


def limit_decoded_images(max_pixels: int) -> None:
    """Makes PIL refuse to decode images over ``max_pixels`` (Gradio decodes uploads before our code runs).

    PIL raises `DecompressionBombError` above twice ``Image.MAX_IMAGE_PIXELS`` (below that it only warns,
    and Gradio silences the warning), hence half. Process-wide; it only ever lowers PIL's limit.
    """
    half = max(1, max_pixels // 2)
    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > half:
        Image.MAX_IMAGE_PIXELS = half


def build_demo(pipe, source: Optional[str] = None, limits: DemoLimits = DemoLimits(), device: Optional[str] = None):
    """The Gradio app (a `gr.Blocks`, queued) around ``pipe``; launch it with `launch`."""
    gr = import_gradio()
    limit_decoded_images(limits.max_upload_pixels)
    demo = MNISTDemo(pipe, source, limits, device)
    handlers = GradioHandlers(demo)
    events = dict(concurrency_limit=limits.concurrency, concurrency_id=QUEUE_ID)

    # Gradio hands a progress tracker to functions with a `gr.Progress()` default argument, and the
    # request (the client's address) to a parameter annotated `gr.Request`.
    def sample(
        prompt_text,
        per_prompt,
        steps,
        eta,
        guidance,
        negative,
        seed,
        scheduler,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008
    ):
        arguments = (prompt_text, per_prompt, steps, eta, guidance, negative, seed, scheduler)
        return handlers.sample(*arguments, progress, client=client_of(request))

    def invert(image, prompt_text, steps, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        return handlers.invert(image, prompt_text, steps, progress, client=client_of(request))

    def interpolate(
        mode,
        seed_a,
        seed_b,
        prompt_a,
        prompt_b,
        frames,
        steps,
        request: gr.Request,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008
    ):
        arguments = (mode, seed_a, seed_b, prompt_a, prompt_b, frames, steps)
        return handlers.interpolate(*arguments, progress, client=client_of(request))

    if pipe.text_encoder is None:
        words = "none: this pipeline has no text encoder, leave it empty"
    else:
        words = " ".join(demo.accepted_words) if demo.accepted_words else "any the text encoder takes"
    with gr.Blocks(title="MNIST DDIM (diffusers)", analytics_enabled=False) as blocks:
        gr.Markdown(INTRO)
        with gr.Tab("Sample"):
            with gr.Row():
                with gr.Column(scale=1):
                    prompt = gr.Textbox(
                        value="7 seven 3" if pipe.text_encoder is not None else "",
                        label="Prompts",
                        info=f"one image set per word; words: {words}",
                        elem_id="prompt",
                    )
                    per_prompt = gr.Slider(
                        1, limits.max_images, value=2, step=1, label="Images per prompt", elem_id="images-per-prompt"
                    )
                    steps = gr.Slider(1, MAX_STEPS, value=50, step=1, label="Steps S", elem_id="steps")
                    eta = gr.Slider(0, 1, value=0, step=0.05, label="eta (DDIM: 0 deterministic, 1 DDPM-like)")
                    guidance = gr.Slider(1, MAX_GUIDANCE, value=1, step=0.5, label="Guidance scale (1: none)")
                    negative = gr.Textbox(
                        label="Negative prompt", info="with guidance above 1: a digit to steer away from"
                    )
                    seed = gr.Number(value=42, precision=0, label="Seed", minimum=0)
                    scheduler = gr.Dropdown(list(SCHEDULERS), value="DDIM", label="Scheduler")
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(
                        label="Samples", columns=6, format="png", object_fit="contain", elem_id="samples"
                    )
                    code = gr.Code(language="python", label="Python that reproduces these images", elem_id="code")
            generate.click(
                sample,
                [prompt, per_prompt, steps, eta, guidance, negative, seed, scheduler],
                [gallery, code],
                **events,
            )
        with gr.Tab("Invert"):
            with gr.Row():
                with gr.Column(scale=1):
                    # White ink on black, as MNIST; any other drawing or upload is converted by `digit_from_image`.
                    sketch = gr.Sketchpad(
                        value=Image.new("RGB", (280, 280)),
                        label="Draw a digit (or upload one)",
                        sources=("upload",),
                        canvas_size=(280, 280),
                        type="pil",  # shrunk as PIL before it becomes an array
                        image_mode="RGBA",
                        elem_id="sketchpad",
                        brush=gr.Brush(
                            default_size=20, colors=["#ffffff"], default_color="#ffffff", color_mode="fixed"
                        ),
                    )
                    invert_prompt = gr.Textbox(label="Prompt (optional)", info="the digit drawn; empty: unconditional")
                    invert_steps = gr.CheckboxGroup(
                        list(INVERSION_STEPS), value=[10, 50, 100], label="Steps S", elem_id="invert-steps"
                    )
                    invert_button = gr.Button("Invert and reconstruct", variant="primary")
                with gr.Column(scale=2):
                    invert_gallery = gr.Gallery(
                        label="Latent x_T and reconstruction per S",
                        columns=2,
                        format="png",
                        object_fit="contain",
                        elem_id="invert-gallery",
                    )
                    invert_table = gr.Markdown()
            invert_button.click(
                invert, [sketch, invert_prompt, invert_steps], [invert_gallery, invert_table], **events
            )
        with gr.Tab("Interpolate"):
            with gr.Row():
                with gr.Column(scale=1):
                    mode = gr.Radio(["seeds", "prompts"], value="seeds", label="Between two")
                    seed_a = gr.Number(value=0, precision=0, label="Seed A (the latent, for prompts)", minimum=0)
                    seed_b = gr.Number(value=1, precision=0, label="Seed B", minimum=0)
                    prompt_a = gr.Textbox(label="Prompt A", info="seeds: optional prompt for the whole strip")
                    prompt_b = gr.Textbox(label="Prompt B", info="prompts only")
                    frames = gr.Slider(2, limits.max_frames, value=8, step=1, label="Frames")
                    interpolate_steps = gr.Slider(1, MAX_STEPS, value=50, step=1, label="Steps S")
                    interpolate_button = gr.Button("Interpolate", variant="primary")
                with gr.Column(scale=2):
                    strip_image = gr.Image(label="Slerp strip", format="png", type="pil")
            interpolate_button.click(
                interpolate,
                [mode, seed_a, seed_b, prompt_a, prompt_b, frames, interpolate_steps],
                strip_image,
                **events,
            )
    blocks.queue(default_concurrency_limit=limits.concurrency, max_size=limits.max_queue)
    blocks.demo_limits = limits  # for `launch`: the upload limit is a launch option in Gradio
    return blocks


def theme():
    """Gradio's default theme with system fonts: the page loads nothing from font CDNs (it works offline)."""
    gr = import_gradio()
    sans = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=sans, font_mono=["ui-monospace", "Consolas", "monospace"])


def launch(
    blocks, host: Optional[str] = "127.0.0.1", port: Optional[int] = 7860, share: bool = False, block: bool = True
):
    """Serves the app; ``host``/``port`` None: Gradio's own defaults (``GRADIO_SERVER_NAME``/``PORT``, as on
    Spaces). With ``block=False`` returns at once (the server keeps running in a thread)."""
    return blocks.launch(
        server_name=host,
        server_port=port,
        share=share,
        theme=theme(),
        prevent_thread_lock=not block,
        show_error=False,
        max_file_size=getattr(blocks, "demo_limits", DemoLimits()).max_upload_bytes,
        quiet=not block,
        footer_links=[],
    )
