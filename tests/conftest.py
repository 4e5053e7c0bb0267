"""Shared fixtures: tiny Lesson 5e networks with non-trivial weights, their diffusers port, checkpoint files.

Every model is built under a fixed seed, then *all* its parameters are perturbed: a fresh
lesson network has zero-initialised ``proj_out`` in each transformer (so attention would
be invisible) and GroupNorm/LayerNorm at weight 1, bias 0 (so a wrong norm mapping could
go unnoticed). Parity checks are only meaningful on weights without such symmetries.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from pipeline_mnist_ddim.conversion.checkpoint import strip_prefixes, unet_from_lesson_state_dict
from pipeline_mnist_ddim.conversion.text_encoders import build_text_encoder
from pipeline_mnist_ddim.lesson.reference import LessonDiffusion, LessonUNet
from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline


REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"
TINY_BASE = 32
TINY_CONTEXT = 32
PERTURBATION = 0.05


# ---------------------------------------------------------------- helpers (importable by the tests)


def perturbed_reference(
    base_channels: int = TINY_BASE, context_dim: int = TINY_CONTEXT, in_channels: int = 1, seed: int = 0
) -> LessonUNet:
    """A lesson network in eval mode whose every parameter is its seeded init plus randn * 0.05."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LessonUNet(base_channels=base_channels, in_channels=in_channels, context_dim=context_dim)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * PERTURBATION)
    return model.eval()


def lesson_state_dict(model: LessonUNet) -> dict:
    """The checkpoint's ``model_state_dict``: the diffusion wrapper's, every key prefixed ``_unet.``."""
    return LessonDiffusion(model).state_dict()


def convert(model: LessonUNet):
    """The diffusers UNet holding the lesson network's weights."""
    return unet_from_lesson_state_dict(strip_prefixes(lesson_state_dict(model)))


def save_lesson_checkpoint(model: LessonUNet, path: Path, step: int = 100) -> Path:
    """Writes a file exactly as Lesson 5e's training loop does."""
    torch.save(
        {
            "step": step,
            "model_state_dict": lesson_state_dict(model),
            "optimizer_state_dict": {},
            "loss": torch.tensor(0.0421),
        },
        path,
    )
    return path


def load_script(path: Path):
    """A file under scripts/ as a module (scripts are run as files, not imported from a package)."""
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seeded_latents(batch_size: int, seed: int = 0, channels: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, channels, 32, 32, generator=torch.Generator().manual_seed(seed))


def sample_in_process(unet, text_encoder, tokenizer, prompts, steps: int, seed: int):
    """What a saved or uploaded folder must reproduce: the same components, never saved, sampled here."""
    pipe = MNISTDDIMPipeline(unet, lesson_ddim_scheduler(), text_encoder, tokenizer)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    return pipe(prompt=prompts, num_inference_steps=steps, generator=generator, output_type="np").images


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are bound by per-operation overhead, so a second thread gains nothing; on a
    shared CPU it can make a test ten times slower (threads waiting on each other). Restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_reference() -> LessonUNet:
    """Base width 32, context dimension 32, one channel."""
    return perturbed_reference()


@pytest.fixture(scope="session")
def tiny_unet(tiny_reference):
    return convert(tiny_reference)


@pytest.fixture(scope="session")
def tiny_text_encoder():
    """(text_encoder, tokenizer) whose width matches the tiny network's context dimension."""
    return build_text_encoder(hidden_size=TINY_CONTEXT, num_layers=1)


@pytest.fixture
def tiny_pipeline(tiny_unet, tiny_text_encoder) -> MNISTDDIMPipeline:
    """A fresh pipeline (own scheduler) around the shared, read-only components."""
    text_encoder, tokenizer = tiny_text_encoder
    pipe = MNISTDDIMPipeline(
        unet=tiny_unet, scheduler=lesson_ddim_scheduler(), text_encoder=text_encoder, tokenizer=tokenizer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def unconditional_pipeline(tiny_unet) -> MNISTDDIMPipeline:
    pipe = MNISTDDIMPipeline(unet=tiny_unet, scheduler=lesson_ddim_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def lesson_checkpoint(tiny_reference, tmp_path_factory) -> Path:
    """The tiny network saved as a Lesson 5e ``gaussian_diffusion_ddpm-{step}.pt``."""
    folder = tmp_path_factory.mktemp("checkpoint")
    return save_lesson_checkpoint(tiny_reference, folder / "gaussian_diffusion_ddpm-100.pt")


@pytest.fixture(scope="session")
def text_encoder_folder(tiny_text_encoder, tmp_path_factory) -> Path:
    """Text model and tokenizer saved side by side, as the training script writes them."""
    folder = tmp_path_factory.mktemp("text_encoder")
    text_encoder, tokenizer = tiny_text_encoder
    text_encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def convert_script():
    """The converter command (``mnist-ddim-convert``; ``convert_checkpoint.py`` wraps it)."""
    from pipeline_mnist_ddim.tools.commands import convert

    return convert


@pytest.fixture
def sampler(capsys, monkeypatch, tiny_pipeline, workdir):
    """(exit code, stderr, pipelines loaded) of mnist-ddim-sample writing into ``workdir/outputs/samples`` (a later
    ``--output_dir`` wins), sampling with the tiny pipeline; ``workdir`` is the calling test module's."""
    from pipeline_mnist_ddim.tools.commands import sample as sample_command

    loaded = []

    def load_tiny(settings, dtype_name=None):
        loaded.append(settings)
        return tiny_pipeline

    monkeypatch.setattr("pipeline_mnist_ddim.tools.sample.load_pipeline", load_tiny)

    def run(*argv):
        args = ["--output_dir", workdir / "outputs" / "samples", "--num_samples", "2", "--num_inference_steps", "2"]
        code = sample_command.main([str(a) for a in [*args, *argv]])
        return code, capsys.readouterr().err, loaded

    return run
