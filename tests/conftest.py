"""Shared fixtures: tiny Lesson 5e networks with non-trivial weights, their diffusers port, checkpoint files.

Every model is built under a fixed seed, then *all* its parameters are perturbed: a fresh
lesson network has zero-initialised ``proj_out`` in each transformer (so attention would
be invisible) and GroupNorm/LayerNorm at weight 1, bias 0 (so a wrong norm mapping could
go unnoticed). Parity checks are only meaningful on weights without such symmetries.
"""

import importlib
import importlib.util
import os
import platform
import shutil
import time
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


def run_converter(convert_script, checkpoint, output_dir, *options):
    argv = ["--checkpoint", str(checkpoint), "--output_dir", str(output_dir), *options]
    assert convert_script.main(argv) == 0
    return Path(output_dir)


def load_script(path: Path):
    """A file under scripts/ as a module (scripts are run as files, not imported from a package)."""
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def package_code_in_a_folder() -> dict:
    """What a saved pipeline folder must carry, by its path in the folder: the package modules, byte for byte
    (the pipeline with every ``pipeline_*.py`` module it is made of, and the UNet's in ``unet/``)."""
    import pipeline_mnist_ddim

    package = Path(pipeline_mnist_ddim.__file__).parent
    code = {path.name: path.read_bytes() for path in sorted(package.glob("pipeline_*.py"))}
    code["unet/unet_mnist.py"] = (package / "unet_mnist.py").read_bytes()
    assert {"pipeline_mnist_ddim.py", "pipeline_folder.py", "pipeline_checks.py"} <= set(code)
    return code


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


# ---------------------------------------------------------------- refusals: the user's files, which must survive


TORCH_UNSAFE_ADVICE = ("weights_only=False", "weights_only` set to `False`", "will likely succeed")


def tree(root: Path) -> dict:
    """Every file under ``root`` (hidden ones too) and its bytes; symbolic links as their targets."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            files[str(path.relative_to(root))] = f"-> {os.readlink(path)}"
        elif path.is_file():
            files[str(path.relative_to(root))] = path.read_bytes()
        elif path.is_dir():
            files[str(path.relative_to(root)) + "/"] = "dir"
    return files


def assert_refused(code: int, stderr: str, *expected_in_message: str) -> str:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]  # progress bars may precede it
    assert len(errors) == 1, stderr
    for text in expected_in_message:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    assert not any(advice in stderr for advice in TORCH_UNSAFE_ADVICE), stderr
    return errors[0]


@pytest.fixture
def workdir(tmp_path, lesson_checkpoint, monkeypatch):
    """inputs/ (a lesson checkpoint and a note), outputs/ (a note): the user's files, which must survive.

    The working directory is inputs/, so a path that resolves to "here" points at the user's files.
    """
    (tmp_path / "inputs").mkdir()
    (tmp_path / "outputs").mkdir()
    shutil.copy(lesson_checkpoint, tmp_path / "inputs" / "ckpt.pt")
    (tmp_path / "inputs" / "notes.txt").write_text("precious input")
    (tmp_path / "outputs" / "keep.txt").write_text("precious output")
    monkeypatch.chdir(tmp_path / "inputs")
    return tmp_path


@pytest.fixture
def converter(convert_script, capsys):
    """(exit code, stderr) of `convert_checkpoint.py` with these arguments."""

    def run(*argv):
        code = convert_script.main([str(a) for a in argv])
        return code, capsys.readouterr().err

    return run


def convert_args(checkpoint, output_dir, *options):
    return ["--checkpoint", checkpoint, "--output_dir", output_dir, "--text_encoder", "none", *options]


def _build_pipeline_forbidden(*args, **kwargs):
    pytest.fail("the converter built the pipeline before refusing")


@pytest.fixture
def conversion_forbidden(monkeypatch):
    """Fails the test if the converter gets as far as building the pipeline (the slow part).

    The command imports `build_pipeline` inside `convert()`, so it finds this replacement when it
    runs; `test_forbidden_conversion_stops_a_valid_run` proves that, so "refused first" is enforced.
    """
    monkeypatch.setattr("pipeline_mnist_ddim.conversion.pipeline_builder.build_pipeline", _build_pipeline_forbidden)


@pytest.fixture
def our_folder(workdir, converter) -> Path:
    """A pipeline folder the converter wrote: outputs/pipe."""
    folder = workdir / "outputs" / "pipe"
    assert converter(*convert_args(workdir / "inputs" / "ckpt.pt", folder))[0] == 0
    return folder


COMMANDS = {
    "sample_ddim": "sample",
    "benchmark": "benchmark",
    "evaluate": "evaluate",
    "interpolate": "interpolate",
    "train_lesson5e": "train",
}  # scripts/<name>.py wraps pipeline_mnist_ddim.tools.commands.<command>


def command_module(name: str):
    return importlib.import_module(f"pipeline_mnist_ddim.tools.commands.{COMMANDS[name]}")


# ---------------------------------------------------------------- the run's own record

SUITE_STARTED = pytest.StashKey[float]()


def pytest_configure(config):
    config.stash[SUITE_STARTED] = time.monotonic()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):  # not Linux
        return platform.processor() or platform.machine()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line with what the run took and where, so a run's log states what the README claims."""
    outcomes = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
    count = sum(len(terminalreporter.stats.get(outcome, [])) for outcome in outcomes)
    if count:
        seconds = time.monotonic() - config.stash[SUITE_STARTED]
        terminalreporter.write_line(
            f"this run: {count} tests in {seconds:.0f} s ({seconds / 60:.1f} min) on {cpu_model()}, "
            f"{os.cpu_count()} cores, torch threads: {torch.get_num_threads()}"
        )
