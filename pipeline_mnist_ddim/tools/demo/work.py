"""The web demo's work on plain Python values: sampling, inversion and interpolation requests (no Gradio)."""

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image

from pipeline_mnist_ddim.tools.arguments import (
    check_eta,
    check_guidance_scale,
    check_seed,
    check_steps,
    whole_number,
)
from pipeline_mnist_ddim.tools.demo.images import digit_from_image
from pipeline_mnist_ddim.tools.demo.limits import (
    EVALUATIONS_PER_STEP,
    INVERSION_STEPS,
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
