"""Slerp, latent and prompt interpolation, and the consistency check on a tiny pipeline (offline, CPU)."""

import math

import pytest
import torch

from pipeline_mnist_ddim.tools.interpolation import (
    InterpolationSettings,
    consistency,
    interpolate_prompts,
    run_interpolation,
    slerp,
    slerp_path,
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def classifier():
    from pipeline_mnist_ddim.tools.classifier import load_default_classifier

    return load_default_classifier()


# ---------------------------------------------------------------- slerp


def test_slerp_endpoints_are_the_inputs_exactly():
    a, b = torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32)
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)


def test_slerp_path_starts_and_ends_at_the_inputs():
    a, b = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32)
    path = slerp_path(a, b, 5)
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


def test_slerp_of_different_shapes_is_refused():
    with pytest.raises(ValueError):
        slerp(torch.ones(1, 4), torch.ones(1, 5), 0.5)


# ---------------------------------------------------------------- decoding along a path


def test_prompt_interpolation_endpoints_match_plain_prompted_sampling(tiny_pipeline):
    latent = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    strip = interpolate_prompts(tiny_pipeline, "3", "eight", latent, num_frames=3, num_inference_steps=2)
    three = tiny_pipeline(prompt="3", latents=latent, num_inference_steps=2, output_type="pt").images
    assert strip.shape == (3, 1, 32, 32)
    torch.testing.assert_close(strip[:1], three, atol=1e-5, rtol=0)


def test_consistency_decodes_at_every_step_count_and_reports_the_share_of_stable_labels(tiny_pipeline, classifier):
    latents = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    result = consistency(tiny_pipeline, classifier, latents, steps=(1, 2))
    assert result["images"].shape == (2, 2, 1, 32, 32) and result["rms_to_last"]["2"] == 0.0
    assert 0.0 <= result["share_same_label"] <= 1.0


def test_interpolation_run_writes_its_figures(tiny_pipeline, classifier, tmp_path):
    settings = InterpolationSettings(
        num_frames=3,
        num_inference_steps=2,
        num_pairs=1,
        prompt_pairs=["1,7"],
        consistency_samples=2,
        consistency_steps=[1, 2],
    )
    results = run_interpolation(tiny_pipeline, settings, str(tmp_path), classifier=classifier)
    for name in ("slerp_latents.png", "slerp_prompts.png", "consistency.png", "interpolation.json"):
        assert (tmp_path / name).is_file()
    assert 0.0 <= results["consistency"]["share_same_label"] <= 1.0
