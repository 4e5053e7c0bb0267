"""The web demo's functions (pipeline_mnist_ddim/tools/demo/) on a tiny pipeline; the page itself: test_demo_browser.py."""

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, load_script
from demo_requests import STEPS, drawn_digit, request

from pipeline_mnist_ddim.conversion.folders import load_pipeline_folder, save_pipeline_folder
from pipeline_mnist_ddim.conversion.text_encoders import VOCABULARY
from pipeline_mnist_ddim.tools.demo.app import GradioHandlers, build_demo
from pipeline_mnist_ddim.tools.demo.images import digit_from_image
from pipeline_mnist_ddim.tools.demo.limits import SCHEDULERS, DemoInputError, DemoLimits, parse_prompts
from pipeline_mnist_ddim.tools.demo.work import MNISTDemo
from pipeline_mnist_ddim.tools.interpolation import seeded_latent


pytestmark = pytest.mark.usefixtures("one_thread")


def as_arrays(images):
    return np.stack([np.asarray(image) for image in images])


@pytest.fixture
def demo(tiny_pipeline):
    return MNISTDemo(tiny_pipeline, limits=DemoLimits(max_images=8, max_image_steps=200, max_frames=6))


@pytest.fixture(scope="module")
def saved_tiny_pipeline(tiny_unet, tiny_text_encoder, tmp_path_factory):
    """The tiny pipeline written as a folder and loaded back through its own remote code, as the demo loads one."""
    from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline

    text_encoder, tokenizer = tiny_text_encoder
    pipe = MNISTDDIMPipeline(
        unet=tiny_unet, scheduler=lesson_ddim_scheduler(), text_encoder=text_encoder, tokenizer=tokenizer
    )
    folder = save_pipeline_folder(pipe, str(tmp_path_factory.mktemp("demo") / "tiny-pipeline"))
    return folder, load_pipeline_folder(folder)


# ---------------------------------------------------------------- prompts


def test_prompts_split_on_spaces_and_commas_and_are_lowercased():
    assert parse_prompts(" 7 Seven,3 ,, nine ") == ["7", "seven", "3", "nine"]


def test_empty_prompt_means_unconditional(demo):
    sample_request = request(demo, prompt="  ", per_prompt=3)
    assert sample_request.prompts == [] and sample_request.num_images == 3
    assert sample_request.pipeline_kwargs()["batch_size"] == 3 and "prompt" not in sample_request.pipeline_kwargs()


def test_unknown_word_is_refused_naming_it_and_the_known_words(demo):
    with pytest.raises(DemoInputError) as err:
        request(demo, prompt="7 eight8 3")
    message = str(err.value)
    assert "unknown word 'eight8'" in message
    assert all(word in message.split() for word in VOCABULARY)


def test_negative_prompt_must_be_one_known_digit(demo):
    with pytest.raises(DemoInputError, match="unknown word 'seventy'"):
        request(demo, guidance=2.0, negative="seventy")
    with pytest.raises(DemoInputError, match="the negative prompt takes one digit"):
        request(demo, guidance=2.0, negative="3 4")


def test_negative_prompt_without_guidance_is_refused(demo):
    with pytest.raises(DemoInputError, match="guidance scale above 1"):
        request(demo, guidance=1.0, negative="3")


def test_guidance_without_prompt_is_refused(demo):
    with pytest.raises(DemoInputError, match="guidance needs a prompt"):
        request(demo, prompt="", guidance=2.0)


# ---------------------------------------------------------------- caps and ranges


def test_too_many_images_are_refused(demo):
    with pytest.raises(DemoInputError, match="10 images is over this demo's limit of 8 per request"):
        request(demo, prompt="1 2 3 4 5", per_prompt=2)


def test_images_times_steps_over_the_cap_are_refused(demo):
    with pytest.raises(DemoInputError, match=r"4 images x 60 steps = 240 network evaluations is over .* limit of 200"):
        request(demo, steps=60)


def test_guidance_doubles_the_counted_work(demo):
    request(demo, steps=50)  # 4 x 50 = 200: at the cap
    with pytest.raises(DemoInputError, match=r"4 images x 50 steps x 2 \(guidance\) = 400"):
        request(demo, steps=50, guidance=2.0)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(steps=0), "steps must be a whole number from 1 to 1000"),
        (dict(steps=1001), "steps must be a whole number from 1 to 1000"),
        (dict(steps=2.5), "steps must be a whole number from 1 to 1000, not 2.5"),
        (dict(eta=1.5), r"eta must be a number from 0 to 1 \(0: deterministic DDIM, 1: DDPM-like\), not 1.5"),
        (dict(eta=float("nan")), "eta must be a number from 0 to 1"),
        (dict(guidance=-0.5), r"guidance scale must be a finite number >= 0 \(<= 1: no guidance\), not -0.5"),
        (dict(seed=2**64), r"seed must be a whole number from -2\*\*63"),
        (dict(seed=None), r"seed must be a whole number from -2\*\*63 .*, not None"),
        (dict(seed=float("nan")), r"seed must be a whole number from -2\*\*63"),
        (dict(per_prompt=0), "images per prompt must be a whole number from 1 to 8, not 0"),
        (dict(scheduler="LMS"), "unknown scheduler 'LMS'"),
    ],
)
def test_out_of_range_settings_are_refused_with_the_accepted_range(demo, changes, message):
    with pytest.raises(DemoInputError, match=message):
        request(demo, **changes)


def test_bad_input_reaches_the_page_as_a_gradio_error(demo):
    import gradio as gr

    handlers = GradioHandlers(demo)
    with pytest.raises(gr.Error, match="unknown word 'eight8'"):
        handlers.sample("eight8", 1, STEPS, 0.0, 1.0, "", 0, "DDIM")
    with pytest.raises(gr.Error, match="over this demo's limit"):
        handlers.sample("7", 8, 1000, 0.0, 1.0, "", 0, "DDIM")


# ---------------------------------------------------------------- sampling


def test_gallery_holds_every_image_captioned_with_its_prompt(demo):
    gallery, code = GradioHandlers(demo).sample("7 seven 3", 2, STEPS, 0.0, 1.0, "", 0, "DDIM")
    assert [caption for _, caption in gallery] == ["7", "7", "seven", "seven", "3", "3"]
    assert all(image.size == (128, 128) for image, _ in gallery)
    assert "prompt=['7', 'seven', '3']" in code


def test_progress_reports_every_step_of_the_schedule(demo):
    seen = []
    demo.sample(request(demo, per_prompt=1, steps=4), on_step=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_gallery_images_are_the_pipelines_images(demo, tiny_pipeline):
    images = demo.sample(request(demo, eta=0.5))
    direct = tiny_pipeline(
        prompt=["7", "3"],
        num_images_per_prompt=2,
        num_inference_steps=STEPS,
        eta=0.5,
        generator=torch.Generator().manual_seed(42),
    ).images
    assert np.array_equal(as_arrays(images), as_arrays(direct))


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_every_offered_scheduler_gives_finite_images(demo, scheduler):
    images = as_arrays(demo.sample(request(demo, per_prompt=1, steps=4, scheduler=scheduler)))
    assert images.shape == (2, 32, 32) and np.isfinite(images).all()
    assert type(demo.with_scheduler(scheduler).scheduler).__name__ == SCHEDULERS[scheduler]


def test_scheduler_choice_leaves_the_shared_pipeline_alone(demo, tiny_pipeline):
    demo.sample(request(demo, per_prompt=1, scheduler="Euler ancestral"))
    assert type(tiny_pipeline.scheduler).__name__ == "DDIMScheduler"


# ---------------------------------------------------------------- the reproduction code


def run_reproduction_code(code):
    namespace = {}
    exec(compile(code, "<reproduction code>", "exec"), namespace)
    return namespace["images"]


@pytest.mark.parametrize(
    "settings",
    [
        dict(prompt="7 seven", eta=0.5, guidance=2.0, seed=3),
        dict(prompt="", per_prompt=3, seed=5),
        dict(prompt="4", scheduler="Euler ancestral", seed=7),
        dict(prompt="2 9", scheduler="DPM-Solver++ (multistep)", guidance=1.5),
    ],
    ids=["ddim-eta-guidance", "unconditional", "euler-ancestral", "dpm-solver"],
)
def test_reproduction_code_gives_exactly_the_gallery_images(saved_tiny_pipeline, settings):
    folder, pipe = saved_tiny_pipeline
    demo = MNISTDemo(pipe, source=folder)
    sample_request = request(demo, **settings)
    images = demo.sample(sample_request)
    reproduced = run_reproduction_code(demo.reproduction_code(sample_request))
    assert np.array_equal(as_arrays(images), as_arrays(reproduced))


def test_reproduction_code_of_the_embedded_default_names_its_folder(demo):
    code = demo.reproduction_code(request(demo, scheduler="UniPC (multistep)"))
    assert "from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR" in code
    assert "DiffusionPipeline.from_pretrained(DEFAULT_PIPELINE_DIR, trust_remote_code=True)" in code
    assert "pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)" in code


def test_negative_prompt_is_passed_and_reproduced(saved_tiny_pipeline):
    """Needs the pipeline's `negative_prompt` (guidance against the negative prompt's context)."""
    folder, pipe = saved_tiny_pipeline
    demo = MNISTDemo(pipe, source=folder)
    with_negative = request(demo, prompt="7", guidance=3.0, negative="1")
    assert with_negative.pipeline_kwargs()["negative_prompt"] == "1"
    assert "negative_prompt" not in request(demo, prompt="7", guidance=3.0).pipeline_kwargs()
    images = demo.sample(with_negative)
    plain = demo.sample(request(demo, prompt="7", guidance=3.0))
    assert np.abs(as_arrays(images).astype(int) - as_arrays(plain).astype(int)).max() > 0
    assert np.array_equal(as_arrays(images), as_arrays(run_reproduction_code(demo.reproduction_code(with_negative))))


# ---------------------------------------------------------------- inversion


@pytest.mark.parametrize("kind", ["white-on-black", "dark-on-light", "transparent-canvas"])
def test_drawn_digit_becomes_a_centred_white_on_black_32x32(kind):
    canvas = drawn_digit(dark_on_light=kind == "dark-on-light", transparent=kind == "transparent-canvas")
    digit = digit_from_image(canvas)
    assert digit.shape == (1, 1, 32, 32) and digit.min() >= 0 and digit.max() <= 1
    assert digit[0, 0, :2].max() == 0 and digit[0, 0, :, :2].max() == 0  # a black frame, as MNIST
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    mass = digit[0, 0].sum()
    assert abs((digit[0, 0] * rows).sum() / mass - 15.5) < 1.5 and abs((digit[0, 0] * cols).sum() / mass - 15.5) < 1.5


def test_empty_canvas_is_refused():
    with pytest.raises(DemoInputError, match="draw a digit"):
        digit_from_image({"background": None, "layers": [], "composite": np.zeros((280, 280, 4), dtype=np.uint8)})
    with pytest.raises(DemoInputError, match="draw a digit"):
        digit_from_image(None)


def test_inversion_gives_pipe_invert_latents_and_their_ddim_reconstruction(demo, tiny_pipeline):
    digit, prompt, steps = demo.inversion_request(drawn_digit(), "1", [4, 2])
    assert steps == [2, 4]
    results = demo.invert(digit, prompt, steps)
    for result, s in zip(results, steps):
        latent = tiny_pipeline.invert(digit, prompt="1", num_inference_steps=s)
        decoded = tiny_pipeline(prompt="1", latents=latent, num_inference_steps=s, output_type="pt").images
        assert torch.equal(result["latent"], latent) and torch.equal(result["reconstruction"], decoded)
        assert result["mse"] == pytest.approx(float(((decoded - digit) ** 2).mean()), rel=1e-6)


def test_inversion_page_shows_input_then_latent_and_reconstruction_per_s(demo):
    gallery, table = GradioHandlers(demo).invert(drawn_digit(), "", [2, 3])
    assert [caption.split(", MSE")[0] for _, caption in gallery] == [
        "input (32x32, as MNIST)",
        "S=2: latent x_T",
        "S=2: reconstruction",
        "S=3: latent x_T",
        "S=3: reconstruction",
    ]
    assert table.count("\n| ") == 2


def test_inversion_over_the_cap_is_refused(demo):
    with pytest.raises(DemoInputError, match=r"S = 50, 100 takes 300 network evaluations"):
        demo.inversion_request(drawn_digit(), "", [100, 50])


# ---------------------------------------------------------------- interpolation


def test_seed_strip_runs_from_seed_a_to_seed_b(demo, tiny_pipeline):
    strip = demo.interpolate(demo.interpolation_request("seeds", 3, 4, "", "", 4, STEPS))
    ends = torch.cat([seeded_latent(tiny_pipeline, 3), seeded_latent(tiny_pipeline, 4)])
    direct = tiny_pipeline(batch_size=2, latents=ends, num_inference_steps=STEPS, output_type="pt").images
    assert strip.shape == (4, 1, 32, 32)
    assert (strip[[0, -1]] - direct).abs().max() < 1e-5


def test_prompt_strip_needs_both_prompts(demo):
    with pytest.raises(DemoInputError, match="needs both prompt A and prompt B"):
        demo.interpolation_request("prompts", 0, 1, "3", "", 4, STEPS)


def test_prompt_strip_has_one_frame_per_step_of_the_slerp(demo):
    strip_image = GradioHandlers(demo).interpolate("prompts", 0, None, "3", "8", 5, STEPS)
    assert strip_image.size == (5 * 130 - 2, 128)


def test_too_many_frames_are_refused(demo):
    with pytest.raises(DemoInputError, match="frames must be a whole number from 2 to 6"):
        demo.interpolation_request("seeds", 0, 1, "", "", 7, STEPS)


# ---------------------------------------------------------------- the Space and the pipeline it is given


def test_space_app_builds_the_demo_on_the_pipeline_it_is_given(saved_tiny_pipeline, monkeypatch):
    import gradio as gr

    folder, _ = saved_tiny_pipeline
    monkeypatch.setenv("MNIST_DDIM_PIPELINE", folder)
    app = load_script(REPO_ROOT / "spaces" / "app.py")
    assert isinstance(app.demo, gr.Blocks)


def test_heun_counts_two_network_evaluations_per_step(demo):
    request(demo, steps=50)
    with pytest.raises(DemoInputError, match=r"4 images x 50 steps x 2 \(Heun\) = 400"):
        request(demo, steps=50, scheduler="Heun")


def test_pipeline_without_text_encoder_samples_unconditionally_only(unconditional_pipeline):
    demo = MNISTDemo(unconditional_pipeline)
    assert request(demo, prompt="", per_prompt=2).num_images == 2
    with pytest.raises(DemoInputError, match="this pipeline has no text encoder"):
        request(demo, prompt="7")
    blocks = build_demo(unconditional_pipeline)
    assert [b.value for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "prompt"] == [""]
