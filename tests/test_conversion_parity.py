"""The converted diffusers UNet computes what the Lesson 5e network computes, from the same weights.

In float64 both networks must agree to rounding (<= 1e-9; measured ~3e-14 at full size): any
difference in the math (an eps, a scale, a cast) shows there. In float32 the tolerance is a
yardstick measured in each test, the reference's own rounding (its float32 output against its
float64 one), so that it holds on any CPU: kernel choice alone (SDPA, memory layout) may make
the port's float32 output differ from the reference's by up to twice that.
"""

import ast
import copy

import pytest
import torch
from conftest import TEST_DATA, convert, lesson_state_dict, perturbed_reference

from pipeline_mnist_ddim.conversion.checkpoint import (
    infer_unet_config,
    strip_prefixes,
    unet_from_lesson_state_dict,
)
from pipeline_mnist_ddim.lesson.reference import LessonDiffusion, LessonUNet, SinusoidalEmbedding, SpatialTransformer
from pipeline_mnist_ddim.unet_mnist import MNISTUNet2DConditionModel


pytestmark = pytest.mark.usefixtures("one_thread")

FLOAT64_TOLERANCE = 1e-9  # max abs difference of the predicted noise in float64: the math, not rounding
ROUNDING_MULTIPLE = 2  # float32: at most this many times the reference's own float32 rounding
TIMESTEPS = (0, 500, 999)


def predicted_noise(reference, unet, context, in_channels=1, seed=0, dtype=torch.float32):
    """Both networks' epsilon for one latent per timestep in TIMESTEPS (one batch, per-sample t), in ``dtype``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(TIMESTEPS), in_channels, 32, 32, generator=generator, dtype=torch.float64).to(dtype)
    t = torch.tensor(TIMESTEPS, dtype=dtype)
    context = context.to(dtype)
    diffusers_context = context[:, None, :] if context.dim() == 2 else context  # (B, D) is one token
    with torch.no_grad():
        expected = reference(x, t, context)
        actual = unet(x, t, encoder_hidden_states=diffusers_context).sample
    return expected, actual


def assert_same_math_and_rounding(reference, unet, context, in_channels=1):
    """float64: <= FLOAT64_TOLERANCE; float32: within ROUNDING_MULTIPLE of the reference's own float32 error."""
    reference64, unet64 = copy.deepcopy(reference).double(), copy.deepcopy(unet).double()
    expected64, actual64 = predicted_noise(reference64, unet64, context, in_channels, dtype=torch.float64)
    math_difference = (expected64 - actual64).abs().max().item()
    assert math_difference <= FLOAT64_TOLERANCE, f"float64: {math_difference:.3g}"
    expected, actual = predicted_noise(reference, unet, context, in_channels)
    own_rounding = (expected.double() - expected64).abs().max().item()  # the yardstick
    assert own_rounding > 0, "float32 and float64 agree exactly: the yardstick says nothing"
    difference = (expected - actual).abs().max().item()
    assert difference <= ROUNDING_MULTIPLE * own_rounding, (
        f"float32: {difference:.3g}, own rounding {own_rounding:.3g}"
    )


def text_context(dim, seed=1):
    return torch.randn(len(TIMESTEPS), 77, dim, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the checkpoint format


def test_reference_state_dict_has_exactly_the_keys_and_shapes_of_a_lesson5e_checkpoint():
    rows = (TEST_DATA / "lesson5e_state_dict_keys.tsv").read_text().splitlines()  # header: how it was derived
    data_rows = [row for row in rows if row.strip() and not row.startswith("#")]
    expected = [(key, ast.literal_eval(shape)) for key, shape in (row.split("\t") for row in data_rows)]
    with torch.device("meta"):  # shapes only: no memory, no init cost
        state_dict = LessonDiffusion(LessonUNet()).state_dict()
    actual = [(key, tuple(tensor.shape)) for key, tensor in state_dict.items()]
    assert len(expected) == 440 and len(actual) == len(expected)
    assert dict(actual) == dict(expected)


@pytest.mark.parametrize(
    "base_channels, in_channels, out_channels, context_dim",
    [(128, 1, 1, 768), (32, 1, 1, 32), (64, 3, 3, 96), (32, 1, 2, 48)],
)
def test_converter_reads_widths_channels_and_context_dim_off_the_weights(
    base_channels, in_channels, out_channels, context_dim
):
    with torch.device("meta"):
        model = LessonUNet(base_channels, in_channels, out_channels, context_dim)
    config = infer_unet_config(strip_prefixes(lesson_state_dict(model)))
    assert config == dict(
        in_channels=in_channels,
        out_channels=out_channels,
        base_channels=base_channels,
        cross_attention_dim=context_dim,
        transformer_inner_dim=64,
    )


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_wrapper_prefixes_are_stripped(prefix):
    stripped = strip_prefixes({prefix + "_unet.middle.1.norm.weight": torch.ones(1)})
    assert list(stripped) == ["middle.1.norm.weight"]


def test_keys_with_wrapper_prefixes_convert_to_the_same_weights(tiny_reference, tiny_unet):
    prefixed = {"module._orig_mod." + key: value for key, value in lesson_state_dict(tiny_reference).items()}
    unet = unet_from_lesson_state_dict(strip_prefixes(prefixed))
    expected = tiny_unet.state_dict()
    assert unet.state_dict().keys() == expected.keys()
    assert all(torch.equal(tensor, expected[key]) for key, tensor in unet.state_dict().items())


def test_converted_unet_is_a_float32_eval_model(tiny_unet):
    assert not tiny_unet.training
    assert {p.dtype for p in tiny_unet.parameters()} == {torch.float32}


# ---------------------------------------------------------------- small networks


def test_tiny_network_matches_reference_with_text_context(tiny_reference, tiny_unet):
    assert_same_math_and_rounding(tiny_reference, tiny_unet, text_context(32))


def test_tiny_network_matches_reference_with_lesson_zero_context(tiny_reference, tiny_unet):
    assert_same_math_and_rounding(tiny_reference, tiny_unet, torch.zeros(len(TIMESTEPS), 32))


def test_three_channel_network_converts_and_matches_reference():
    reference = perturbed_reference(base_channels=32, context_dim=32, in_channels=3, seed=3)
    unet = convert(reference)
    assert (unet.config.in_channels, unet.config.out_channels) == (3, 3)
    expected, actual = predicted_noise(reference, unet, text_context(32), in_channels=3)
    assert expected.shape == actual.shape == (len(TIMESTEPS), 3, 32, 32)
    assert_same_math_and_rounding(reference, unet, text_context(32), in_channels=3)


def test_narrower_network_with_other_context_dim_converts_and_matches_reference():
    reference = perturbed_reference(base_channels=64, context_dim=96, seed=4)
    unet = convert(reference)
    assert (unet.config.base_channels, unet.config.cross_attention_dim) == (64, 96)
    assert_same_math_and_rounding(reference, unet, text_context(96))


@pytest.mark.parametrize("base_channels", [32, 128])
def test_timestep_sinusoid_is_the_lessons_bit_for_bit(base_channels):
    """The lesson divides ln(10000) by half - 1 before multiplying, diffusers' Timesteps after: 3e-5 apart at t ~ 999.

    Its frequencies are float32 and its angles take the timesteps' dtype (float64 in a float64 network)."""
    with torch.device("meta"):  # the sinusoid has no weights
        unet = MNISTUNet2DConditionModel(base_channels=base_channels, cross_attention_dim=32)
    lesson = SinusoidalEmbedding(base_channels)
    timesteps = torch.arange(1000)
    expected = lesson(timesteps.float())  # Lesson 6 passes float timesteps, Lesson 5e's training long ones
    for t in (timesteps, timesteps.float()):
        assert torch.equal(unet.time_proj(t), expected), t.dtype
    assert torch.equal(lesson(timesteps), expected)
    expected64 = lesson(timesteps.double())
    assert expected64.dtype == torch.float64 and torch.equal(unet.time_proj(timesteps.double()), expected64)
    assert 0 < (expected64 - expected).abs().max() < 1e-4  # float32 angles are the lesson's float32 rounding


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_network_gives_the_sinusoid_timesteps_of_its_own_dtype(tiny_unet, dtype):
    """Whatever diffusers makes of them (int64 from schedulers, float64 from Python floats), the lesson's
    network sees timesteps of its own dtype: it refuses any other (its Linear layers would)."""
    sample = torch.zeros(1000, 1, 1, 1, dtype=dtype)  # get_time_embed reads its batch size and dtype only
    expected = SinusoidalEmbedding(tiny_unet.config.base_channels)(torch.arange(1000, dtype=dtype))
    for t in (torch.arange(1000), torch.arange(1000).float(), torch.arange(1000).double()):
        assert torch.equal(tiny_unet.get_time_embed(sample, t), expected), t.dtype
    single = tiny_unet.get_time_embed(sample[:1], 999.0)  # a Python float
    assert torch.equal(single, expected[999:]) and single.dtype == dtype


def test_perturbed_weights_make_every_transformer_contribute(tiny_reference):
    """Guards the parity tests: the lesson zero-initialises proj_out, which would hide attention."""
    transformers = [m for m in tiny_reference.modules() if isinstance(m, SpatialTransformer)]
    assert len(transformers) == 6  # downs.1: 2, middle: 1, ups.2: 3
    assert all(m.proj_out.weight.abs().min() > 0 and m.proj_out.bias.abs().min() > 0 for m in transformers)


# ---------------------------------------------------------------- the full-size network


@pytest.fixture(scope="module")
def full_size():
    """Base width 128, context 768: the course's network, with perturbed random weights."""
    reference = perturbed_reference(base_channels=128, context_dim=768, seed=5)
    return reference, convert(reference)


@pytest.mark.slow
def test_full_size_network_matches_reference_with_clip_sized_context(full_size):
    assert_same_math_and_rounding(*full_size, text_context(768))


def test_full_size_network_matches_reference_with_lesson_zero_context(full_size):
    assert_same_math_and_rounding(*full_size, torch.zeros(len(TIMESTEPS), 768))
