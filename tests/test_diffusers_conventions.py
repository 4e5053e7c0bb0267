"""The pipeline behaves as a stock diffusers pipeline does for the scripts written against those; the LoRA
scale per call: test_lora.py; loading through the class: test_loading_through_the_class.py."""

import ast
import importlib
import inspect
import json
import re
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import seeded_latents
from diffusers import DDIMScheduler, DiffusionPipeline, EulerDiscreteScheduler, StableDiffusionPipeline
from diffusers.callbacks import SDCFGCutoffCallback
from tiny_sampling import sample
from yardsticks import float32_rounding

from pipeline_mnist_ddim import pipeline_mnist_ddim
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline


pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 3
ROUNDING_CALL = dict(num_inference_steps=STEPS, output_type="pt")  # what sample() adds


def written_out_guidance(pipe, latents, contexts, negatives=None, scale=1.0):
    """DDIM with eps = eps(negative) + w * (eps(context) - eps(negative)), one (context, negative) per step,
    each context run on its own; ``negatives=None`` is plain conditional sampling."""
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(len(contexts))
    x = latents
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            eps = pipe.unet(x, t, encoder_hidden_states=contexts[i]).sample
            if negatives is not None:
                eps_negative = pipe.unet(x, t, encoder_hidden_states=negatives[i]).sample
                eps = eps_negative + scale * (eps - eps_negative)
            x = scheduler.step(eps, t, x).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


def encode(pipe, prompt):
    return pipe.encode_prompt(prompt, torch.device("cpu"))[0]


# ---------------------------------------------------------------- schedulers


def test_initial_latents_are_scaled_by_the_schedulers_init_noise_sigma(tiny_pipeline):
    tiny_pipeline.scheduler = EulerDiscreteScheduler.from_config(tiny_pipeline.scheduler.config)
    seen = []

    def spy(module, args, kwargs):
        seen.append(kwargs.get("sample", args[0] if args else None).clone())

    handle = tiny_pipeline.unet.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        latents = seeded_latents(1, seed=1)
        sample(tiny_pipeline, latents=latents, num_inference_steps=10)
    finally:
        handle.remove()
    euler = EulerDiscreteScheduler.from_config(tiny_pipeline.scheduler.config)
    euler.set_timesteps(10)
    assert euler.init_noise_sigma > 10  # Euler starts at its largest sigma (t = 900 here), DDIM at 1
    expected = euler.scale_model_input(latents * euler.init_noise_sigma, euler.timesteps[0])
    assert (seen[0] - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize(
    "override", [dict(clip_sample=True), dict(prediction_type="v_prediction"), dict(thresholding=True)]
)
def test_scheduler_assigned_after_construction_is_checked_at_call_time(tiny_pipeline, override):
    tiny_pipeline.scheduler = DDIMScheduler.from_config(tiny_pipeline.scheduler.config, **override)
    with pytest.raises(ValueError, match=next(iter(override))):
        sample(tiny_pipeline, num_inference_steps=1)


# ---------------------------------------------------------------- batch sizes


def test_num_images_per_prompt_multiplies_the_unconditional_batch(tiny_pipeline):
    assert sample(tiny_pipeline, batch_size=2, num_images_per_prompt=3, num_inference_steps=1).shape == (6, 1, 32, 32)
    assert sample(tiny_pipeline, num_images_per_prompt=2, num_inference_steps=1).shape == (2, 1, 32, 32)


def test_num_images_per_prompt_repeats_each_prompt_embedding_in_turn(tiny_pipeline):
    embeds = tiny_pipeline.encode_prompt(["7", "3"], torch.device("cpu"))[0]
    latents = seeded_latents(4, seed=2)
    images = sample(tiny_pipeline, prompt_embeds=embeds, num_images_per_prompt=2, latents=latents)
    by_prompt = sample(tiny_pipeline, prompt=["7", "7", "3", "3"], latents=latents)
    assert images.shape == (4, 1, 32, 32)
    # The text encoder ran on 2 prompts here and on 4 there: other matrix shapes, so other kernels may round
    # differently on another CPU. A wrong order (7, 3, 7, 3) moves images by ~0.1, far above this bound.
    tolerance = 4 * float32_rounding(tiny_pipeline, prompt=["7", "7", "3", "3"], latents=latents, **ROUNDING_CALL)
    assert (images - by_prompt).abs().max().item() <= tolerance


def test_batch_size_equal_to_the_prompt_count_is_accepted(tiny_pipeline):
    latents = seeded_latents(2, seed=3)
    with_batch_size = sample(tiny_pipeline, prompt=["7", "3"], batch_size=2, latents=latents)
    assert torch.equal(with_batch_size, sample(tiny_pipeline, prompt=["7", "3"], latents=latents))


# ---------------------------------------------------------------- guidance and negative prompts


def test_guidance_scale_at_or_below_one_is_plain_conditional_sampling(tiny_pipeline):
    latents = seeded_latents(1, seed=4)
    plain = sample(tiny_pipeline, prompt="7", guidance_scale=1.0, latents=latents)
    for scale in (0.0, 0.5):
        assert torch.equal(sample(tiny_pipeline, prompt="7", guidance_scale=scale, latents=latents), plain)


def test_negative_prompt_guides_away_from_its_embedding(tiny_pipeline):
    latents, scale = seeded_latents(1, seed=5), 3.0
    context, negative = (tiny_pipeline.encode_prompt(p, torch.device("cpu"))[0] for p in ("7", "1"))
    images = sample(tiny_pipeline, prompt="7", negative_prompt="1", guidance_scale=scale, latents=latents)
    expected = written_out_guidance(tiny_pipeline, latents, [context] * STEPS, [negative] * STEPS, scale)
    # Both contexts run as one batch of 2 in the pipeline: other kernels, rounding amplified by this random network.
    assert (images - expected).abs().max().item() <= 1e-4
    against_zeros = sample(tiny_pipeline, prompt="7", guidance_scale=scale, latents=latents)
    assert (images - against_zeros).abs().max().item() > 0.01


def test_negative_prompt_embeds_equal_the_negative_prompt(tiny_pipeline):
    latents = seeded_latents(1, seed=6)
    embeds, negative = (tiny_pipeline.encode_prompt(p, torch.device("cpu"))[0] for p in ("7", "1"))
    by_text = sample(tiny_pipeline, prompt="7", negative_prompt="1", guidance_scale=2.0, latents=latents)
    by_embeds = sample(
        tiny_pipeline, prompt_embeds=embeds, negative_prompt_embeds=negative, guidance_scale=2.0, latents=latents
    )
    assert torch.equal(by_text, by_embeds)


def test_encode_prompt_returns_conditional_and_negative_embeddings_as_stable_diffusion(tiny_pipeline):
    device = torch.device("cpu")
    embeds, negative = tiny_pipeline.encode_prompt(["7", "3"], device, 2, True)
    assert embeds.shape == negative.shape == (4, 8, 32)
    assert torch.equal(negative, torch.zeros_like(negative))  # the lesson's zero context by default
    assert torch.equal(embeds[0], embeds[1]) and not torch.equal(embeds[1], embeds[2])
    embeds, negative = tiny_pipeline.encode_prompt("7", device, 1, False)
    assert negative is None
    _, negative = tiny_pipeline.encode_prompt("7", device, 1, True, negative_prompt="1")
    assert torch.equal(negative, tiny_pipeline.encode_prompt("1", device)[0])


# ---------------------------------------------------------------- properties and callbacks


def test_stock_properties_are_set_during_a_call(tiny_pipeline):
    seen = {}

    def record(pipe, step, timestep, tensors):
        seen.update(
            guidance_scale=pipe.guidance_scale,
            cfg=pipe.do_classifier_free_guidance,
            num_timesteps=pipe.num_timesteps,
            interrupt=pipe.interrupt,
        )
        return tensors

    sample(tiny_pipeline, prompt="7", guidance_scale=2.5, num_inference_steps=4, callback_on_step_end=record)
    assert seen == dict(guidance_scale=2.5, cfg=True, num_timesteps=4, interrupt=False)


def test_interrupt_skips_the_remaining_steps(tiny_pipeline):
    latents = seeded_latents(1, seed=7)

    def stop_after_first(pipe, step, timestep, tensors):
        pipe._interrupt = True
        return tensors

    interrupted = sample(tiny_pipeline, latents=latents, output_type="latent", callback_on_step_end=stop_after_first)
    one_step = seeded_latents(1, seed=7)
    tiny_pipeline.scheduler.set_timesteps(STEPS)
    t = tiny_pipeline.scheduler.timesteps[0]
    with torch.no_grad():
        eps = tiny_pipeline.unet(one_step, t, encoder_hidden_states=torch.zeros(1, 1, 32)).sample
    expected = tiny_pipeline.scheduler.step(eps, t, one_step).prev_sample
    assert torch.equal(interrupted, expected)


def test_prompt_embeds_returned_by_the_callback_are_used(tiny_pipeline):
    latents, seven, three = seeded_latents(1, seed=8), encode(tiny_pipeline, "7"), encode(tiny_pipeline, "3")

    def switch_to_three(pipe, step, timestep, tensors):
        return {"prompt_embeds": three} if step == 0 else {}

    switched = sample(
        tiny_pipeline,
        prompt="7",
        latents=latents,
        callback_on_step_end=switch_to_three,
        callback_on_step_end_tensor_inputs=["prompt_embeds"],
    )
    expected = written_out_guidance(tiny_pipeline, latents, [seven, three, three])
    assert (switched - expected).abs().max().item() <= 1e-6
    assert (switched - sample(tiny_pipeline, prompt="7", latents=latents)).abs().max().item() > 1e-3


def test_negative_prompt_embeds_returned_by_the_callback_are_used(tiny_pipeline):
    latents, seven, one = seeded_latents(1, seed=9), encode(tiny_pipeline, "7"), encode(tiny_pipeline, "1")

    def negative_one_from_now_on(pipe, step, timestep, tensors):
        return {"negative_prompt_embeds": one}

    switched = sample(
        tiny_pipeline,
        prompt="7",
        guidance_scale=3.0,
        latents=latents,
        callback_on_step_end=negative_one_from_now_on,
        callback_on_step_end_tensor_inputs=["negative_prompt_embeds"],
    )
    zeros = torch.zeros_like(one)
    expected = written_out_guidance(tiny_pipeline, latents, [seven] * 3, [zeros, one, one], scale=3.0)
    # Both contexts run as one batch of 2 in the pipeline: other kernels, rounding amplified by this random network.
    assert (switched - expected).abs().max().item() <= 1e-4
    against_zeros = sample(tiny_pipeline, prompt="7", guidance_scale=3.0, latents=latents)
    assert (switched - against_zeros).abs().max().item() > 1e-3


def test_diffusers_cfg_cutoff_callback_turns_guidance_off_after_the_cutoff(tiny_pipeline):
    latents, steps = seeded_latents(1, seed=10), 4
    seven = encode(tiny_pipeline, "7")
    cutoff = SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1)
    images = sample(
        tiny_pipeline,
        prompt="7",
        guidance_scale=3.0,
        latents=latents,
        num_inference_steps=steps,
        callback_on_step_end=cutoff,
    )
    assert tiny_pipeline.guidance_scale == 0.0 and not tiny_pipeline.do_classifier_free_guidance
    # Steps 0 and 1 guided against the zero context, steps 2 and 3 plain (guidance scale 1 == no negative term).
    zeros = torch.zeros_like(seven)
    expected = written_out_guidance(tiny_pipeline, latents, [seven] * 4, [zeros, zeros, seven, seven], scale=3.0)
    assert (images - expected).abs().max().item() <= 1e-4
    guided = sample(tiny_pipeline, prompt="7", guidance_scale=3.0, latents=latents, num_inference_steps=steps)
    assert (images - guided).abs().max().item() > 1e-3


# ---------------------------------------------------------------- outputs


def test_latent_output_is_the_unclamped_final_sample(tiny_pipeline):
    latents = seeded_latents(2, seed=11)
    x0 = sample(tiny_pipeline, batch_size=2, latents=latents, output_type="latent")
    images = sample(tiny_pipeline, batch_size=2, latents=latents, output_type="pt")
    assert x0.shape == (2, 1, 32, 32) and x0.dtype == torch.float32
    assert torch.equal((x0 / 2 + 0.5).clamp(0, 1), images)


# ---------------------------------------------------------------- pipeline methods


def test_auto_attention_slicing_samples_the_same_images(tiny_pipeline):
    latents = seeded_latents(2, seed=12)
    plain = sample(tiny_pipeline, prompt=["7", "3"], latents=latents)
    tiny_pipeline.enable_attention_slicing()  # "auto": one-head layers cannot be halved
    try:
        sliced = sample(tiny_pipeline, prompt=["7", "3"], latents=latents)
    finally:
        tiny_pipeline.disable_attention_slicing()
    assert (sliced - plain).abs().max().item() <= 1e-5


def test_from_pipe_shares_every_component(tiny_pipeline):
    copy = type(tiny_pipeline).from_pipe(tiny_pipeline)
    assert isinstance(copy, MNISTDDIMPipeline)
    assert copy.unet is tiny_pipeline.unet and copy.text_encoder is tiny_pipeline.text_encoder
    latents = seeded_latents(1, seed=13)
    copy.set_progress_bar_config(disable=True)
    assert torch.equal(sample(copy, prompt="7", latents=latents), sample(tiny_pipeline, prompt="7", latents=latents))


def test_save_pretrained_of_a_compiled_unet_records_the_model_class_and_code(tiny_pipeline, tmp_path):
    tiny_pipeline.unet = torch.compile(tiny_pipeline.unet)  # wraps without compiling until called
    tiny_pipeline.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["unet"] == ["unet_mnist", "MNISTUNet2DConditionModel"]
    assert sorted(p.name for p in (tmp_path / "unet").glob("*.py")) == ["unet_mnist.py"]
    reloaded = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    latents = seeded_latents(1, seed=14)
    reloaded.set_progress_bar_config(disable=True)
    original = tiny_pipeline.unet._orig_mod
    tiny_pipeline.unet = original
    saved, weights = reloaded.unet.state_dict(), original.state_dict()
    assert saved.keys() == weights.keys() and all(torch.equal(saved[k], weights[k]) for k in weights)
    # The same weights and math, yet not bit-identical images on every CPU: the reloaded weights sit at other
    # memory offsets, and on an AMD EPYC (AVX-512, no AMX) a batch-of-1 linear layer then sums in another order
    # (8.5e-6 there, 0 on an Intel Xeon). Bound: a few times this call's own float32 rounding (the difference
    # measured 0.9-1.7x it over four seeds).
    tolerance = 4 * float32_rounding(tiny_pipeline, prompt="7", latents=latents, **ROUNDING_CALL)
    difference = sample(reloaded, prompt="7", latents=latents) - sample(tiny_pipeline, prompt="7", latents=latents)
    assert difference.abs().max().item() <= tolerance


def test_attention_runs_through_sdpa_and_matches_the_plain_processor(tiny_pipeline):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    assert {type(p) for p in tiny_pipeline.unet.attn_processors.values()} == {AttnProcessor2_0}  # SDPA
    latents = seeded_latents(1, seed=15)
    sdpa = sample(tiny_pipeline, prompt="7", latents=latents)
    tiny_pipeline.unet.set_attn_processor(AttnProcessor())
    try:
        plain = sample(tiny_pipeline, prompt="7", latents=latents)
    finally:
        tiny_pipeline.unet.set_attn_processor(AttnProcessor2_0())
    assert (sdpa - plain).abs().max().item() <= 1e-5


def test_model_cpu_offload_hooks_sample_the_same_images(tiny_unet, tiny_text_encoder):
    """The offload sequence (text_encoder -> unet) and its hooks, exercised with the CPU as the
    'accelerator' (CI has no GPU: moving to one is not tested here)."""
    import copy

    from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler

    text_encoder, tokenizer = tiny_text_encoder
    pipe = MNISTDDIMPipeline(copy.deepcopy(tiny_unet), lesson_ddim_scheduler(), copy.deepcopy(text_encoder), tokenizer)
    pipe.set_progress_bar_config(disable=True)
    latents = seeded_latents(1, seed=16)
    plain = sample(pipe, prompt="7", latents=latents)
    pipe.enable_model_cpu_offload(device="cpu")
    assert torch.equal(sample(pipe, prompt="7", latents=latents), plain)


# ---------------------------------------------------------------- what diffusers' shared pipeline tests expect


def test_call_takes_stable_diffusions_shared_parameters_in_its_order_and_declares_its_return():
    ours = inspect.signature(MNISTDDIMPipeline.__call__)
    theirs = list(inspect.signature(StableDiffusionPipeline.__call__).parameters)
    shared = [name for name in ours.parameters if name in theirs]
    assert "cross_attention_kwargs" in shared
    assert shared == [name for name in theirs if name in shared]
    assert ours.return_annotation is not inspect.Signature.empty


def test_check_inputs_is_called_with_keyword_arguments_only():
    pipeline_files = Path(pipeline_mnist_ddim.__file__).parent.glob("pipeline_*.py")  # the class and its mixins
    calls = [
        node
        for path in pipeline_files
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "check_inputs"
    ]
    assert len(calls) == 2  # __call__ and invert
    assert all(call.args == [] and call.keywords for call in calls)


def _copied_from_blocks():
    """(target, our source) for each `# Copied from diffusers....` marker in the pipeline module."""
    lines = Path(pipeline_mnist_ddim.__file__).read_text().splitlines()
    for number, line in enumerate(lines):
        marker = re.match(r"\s*# Copied from (diffusers\.[\w.]+)$", line)
        if marker:
            # the marked definition runs until the next line indented no deeper than its `def`
            indent = len(lines[number + 1]) - len(lines[number + 1].lstrip())
            end = number + 2
            while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
                end += 1
            yield marker.group(1), textwrap.dedent("\n".join(lines[number + 1 : end]).rstrip() + "\n")


def _installed_source(target: str) -> str:
    module_name, class_name, function_name = target.rsplit(".", 2)
    function = getattr(getattr(importlib.import_module(module_name), class_name), function_name)
    return textwrap.dedent(inspect.getsource(function))


def test_code_marked_copied_from_diffusers_is_the_installed_diffusers_code_verbatim():
    blocks = list(_copied_from_blocks())
    assert blocks  # prepare_extra_step_kwargs at least
    for target, ours in blocks:
        assert ours == _installed_source(target), target


def test_scheduler_none_is_accepted_to_encode_prompts_and_refused_to_sample(tiny_pipeline, tiny_text_encoder):
    text_encoder, tokenizer = tiny_text_encoder
    encoder_only = MNISTDDIMPipeline(unet=None, scheduler=None, text_encoder=text_encoder, tokenizer=tokenizer)
    embeds, _ = encoder_only.encode_prompt("7", torch.device("cpu"))
    assert torch.equal(embeds, tiny_pipeline.encode_prompt("7", torch.device("cpu"))[0])
    tiny_pipeline.scheduler = None
    with pytest.raises(ValueError, match="`scheduler`"):
        sample(tiny_pipeline, prompt="7")
