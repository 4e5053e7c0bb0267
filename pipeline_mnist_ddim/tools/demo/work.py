"""The web demo's work on plain Python values: sampling, inversion and interpolation requests (no Gradio)."""

import math
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from pipeline_mnist_ddim.tools.arguments import (
    check_eta,
    check_guidance_scale,
    check_seed,
    check_steps,
    whole_number,
)
from pipeline_mnist_ddim.tools.demo.limits import (
    DISPLAY_SIZE,
    EVALUATIONS_PER_STEP,
    INVERSION_STEPS,
    MAX_DIGIT_SIDE,
    SCHEDULERS,
    ClientLimiter,
    Deadline,
    DemoInputError,
    DemoLimits,
    check_cost,
    demo_input,
    parse_prompts,
    parse_single_prompt,
)
from pipeline_mnist_ddim.tools.interpolation import interpolate_latents, interpolate_prompts, seeded_latent


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
        self,
        pipe,
        source: Optional[str] = None,
        limits: DemoLimits = DemoLimits(),  # noqa: B008 (frozen)
        device: Optional[str] = None,  # noqa: B008 (frozen)
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
        with demo_input():
            images_per_prompt = whole_number(images_per_prompt, "images per prompt", 1, self.limits.max_images)
            steps = check_steps(num_inference_steps, "steps")
            eta = check_eta(eta, "eta")
            guidance_scale = check_guidance_scale(guidance_scale, "guidance scale")
            seed = check_seed(seed, "seed")
        negative = parse_single_prompt(negative_prompt_text, self.accepted_words, "the negative prompt")
        if negative is not None and (guidance_scale <= 1 or not prompts):
            raise DemoInputError("a negative prompt acts through guidance: give a prompt and a guidance scale above 1")
        if guidance_scale > 1 and not prompts:
            raise DemoInputError("guidance needs a prompt: type a digit, or set the guidance scale to 1")
        if scheduler not in SCHEDULERS:
            raise DemoInputError(f"unknown scheduler {scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
        request = SampleRequest(prompts, images_per_prompt, steps, eta, guidance_scale, negative, seed, scheduler)
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
        with demo_input():
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
        with demo_input():
            num_frames = whole_number(num_frames, "frames", 2, self.limits.max_frames)
            steps = check_steps(num_inference_steps, "steps")
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
