"""mnist-ddim-sample checks everything it can before sampling: a bad setting, device, prompt, output folder or
scheduler config ends in one `error:` line with exit code 2, before the pipeline is loaded wherever the
arguments alone tell, and leaves no output folder, not even an empty one; good settings write its files.
"""

import json
import shutil

import pytest
import torch
from conftest import assert_refused, command_module, tree


pytestmark = pytest.mark.usefixtures("one_thread")


SAMPLER_CASES = {
    # id: (arguments, texts the message must hold, whether the pipeline may be loaded first)
    "eta just above 1": (["--eta", "1.01"], ["--eta", "from 0", "to 1"], False),
    "eta 2": (["--eta", "2"], ["--eta"], False),
    "eta 1e6": (["--eta", "1e6"], ["--eta"], False),
    "eta NaN": (["--eta", "nan"], ["--eta", "nan"], False),
    "eta infinite": (["--eta", "inf"], ["--eta", "inf"], False),
    "eta negative": (["--eta", "-0.1"], ["--eta"], False),
    "guidance infinite": (["--guidance_scale", "inf"], ["--guidance_scale", "finite"], False),
    "guidance NaN": (["--guidance_scale", "nan"], ["--guidance_scale"], False),
    "guidance negative": (["--guidance_scale", "-0.5"], ["--guidance_scale", ">= 0"], False),
    "no steps": (["--num_inference_steps", "0"], ["--num_inference_steps"], False),
    "negative steps": (["--num_inference_steps", "-3"], ["--num_inference_steps"], False),
    "no samples": (["--num_samples", "0"], ["--num_samples"], False),
    "--text_encoder without --checkpoint": (
        ["--text_encoder", "openai/clip-vit-large-patch14"],
        ["--text_encoder applies to --checkpoint only"],
        False,
    ),
    "--ema without --checkpoint": (["--ema"], ["--ema applies to --checkpoint only"], False),
    "--compact_text_encoder without --checkpoint": (
        ["--compact_text_encoder"],
        ["--compact_text_encoder applies to --checkpoint only"],
        False,
    ),
    "both --pipeline and --checkpoint": (["--pipeline", "p", "--checkpoint", "c.pt"], ["either"], False),
    "a bogus device": (["--device", "bogus"], ["--device 'bogus' is not a device"], False),
    "the meta device": (["--device", "meta"], ["cpu, cuda or mps"], False),
    "blank prompts": (["--prompts", "  "], ["--prompts is empty"], False),
    "an output folder through a file": (["--output_dir", "notes.txt/samples"], ["notes.txt", "is a file"], False),
    "more steps than the model was trained with": (["--num_inference_steps", "5000"], ["at most 1000"], True),
    "a word the model never saw": (["--prompts", "7 eleven seven"], ["never saw: eleven;", "it knows 0, 1"], True),
}


@pytest.mark.parametrize("case", SAMPLER_CASES)
def test_sampler_refuses_bad_settings_before_sampling_or_making_a_folder(case, sampler, workdir):
    argv, expected, may_load = SAMPLER_CASES[case]
    before = tree(workdir)
    code, stderr, loaded = sampler(*argv)
    message = assert_refused(code, stderr, *expected)
    assert bool(loaded) == may_load  # what needs no model is checked before loading one
    assert tree(workdir) == before  # no output folder, not even an empty one
    if "eleven" in argv[-1]:
        assert message.count("eleven") == 1


def test_sampler_refuses_cuda_where_there_is_none(sampler, workdir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = tree(workdir)
    code, stderr, loaded = sampler("--device", "cuda")
    assert_refused(code, stderr, "--device cuda", "CUDA is not available")
    assert loaded == [] and tree(workdir) == before


def test_sampler_refuses_prompts_for_a_pipeline_without_text_encoder(
    sampler, workdir, monkeypatch, unconditional_pipeline
):
    monkeypatch.setattr(
        "pipeline_mnist_ddim.tools.sample.load_pipeline", lambda settings, dtype_name=None: unconditional_pipeline
    )
    before = tree(workdir)
    assert_refused(*sampler("--prompts", "7")[:2], "no text encoder")
    assert tree(workdir) == before


def test_sampler_with_valid_settings_writes_its_four_files(sampler, workdir):
    """Guards the cases above: the same set-up with good settings samples and writes."""
    code, stderr, loaded = sampler("--prompts", "7 seven", "--eta", "1", "--guidance_scale", "2")
    assert code == 0, stderr
    written = sorted(p.name for p in (workdir / "outputs" / "samples").iterdir())
    assert written == [
        "conditional_sample_prompts.txt",
        "conditional_samples.png",
        "settings.json",
        "unconditional_samples.png",
    ]


def _dangling(workdir):
    (workdir / "outputs" / "gone").symlink_to(workdir / "outputs" / "nowhere")
    return workdir / "outputs" / "gone"


def _loop(workdir):
    (workdir / "outputs" / "loop").symlink_to(workdir / "outputs" / "loop")
    return workdir / "outputs" / "loop"


SAMPLE_CASES = {
    # id: (arguments (a function of the work folder), texts the message must hold)
    "--num_samples 1e8": (lambda w: ["--num_samples", "100000000"], ["--num_samples", "from 1 to 256"]),
    "--num_samples 257": (lambda w: ["--num_samples", "257"], ["--num_samples", "from 1 to 256"]),
    "--seed 2**64": (lambda w: ["--seed", str(2**64)], ["--seed", "2**64 - 1", str(2**64)]),
    "--seed -2**63 - 1": (lambda w: ["--seed", str(-(2**63) - 1)], ["--seed"]),
    "a dangling symlink --output_dir": (
        lambda w: ["--output_dir", _dangling(w)],
        ["gone", "symbolic link to nothing"],
    ),
    "a symlink-loop --output_dir": (lambda w: ["--output_dir", _loop(w)], ["loop", "symbolic link to nothing"]),
    "a folder inside a symlink loop": (
        lambda w: ["--output_dir", _loop(w) / "samples"],
        ["symbolic link to nothing"],
    ),
}


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_sampler_refuses_before_loading(case, sampler, workdir):
    argv, expected = SAMPLE_CASES[case]
    argv = argv(workdir)
    before = tree(workdir)
    code, stderr, loaded = sampler(*argv)
    assert_refused(code, stderr, *expected)
    assert loaded == []
    assert tree(workdir) == before


def test_sampler_accepts_the_edges_of_the_ranges(sampler, workdir):
    code, stderr, _ = sampler("--seed", str(2**64 - 1), "--output_dir", workdir / "outputs" / "edge")
    assert code == 0, stderr


TAMPERED_SCHEDULERS = {
    "a v-prediction scheduler": (lambda c: {**c, "prediction_type": "v_prediction"}, ["prediction_type"]),
    "invalid JSON": ("{not json", ["not a valid JSON file"]),
    "NaN betas": (lambda c: {**c, "trained_betas": [float("nan")] * 1000}, ["noise levels are unusable"]),
    "too few betas": (lambda c: {**c, "trained_betas": [0.01] * 10}, ["10 cumulative alphas for 1000 steps"]),
    "a text step count": (lambda c: {**c, "num_train_timesteps": "many"}, ["could not be loaded as a pipeline"]),
}


@pytest.fixture(scope="module")
def saved_unconditional_folder(tiny_unet, tmp_path_factory):
    from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline

    folder = tmp_path_factory.mktemp("saved") / "pipe"
    MNISTDDIMPipeline(unet=tiny_unet, scheduler=lesson_ddim_scheduler()).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", TAMPERED_SCHEDULERS)
def test_sampler_refuses_a_tampered_scheduler_config(case, saved_unconditional_folder, workdir, capsys, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(workdir.parent / "hf_modules"))
    edit, expected = TAMPERED_SCHEDULERS[case]
    folder = workdir / "outputs" / "tampered"
    shutil.copytree(saved_unconditional_folder, folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config_path.write_text(edit if isinstance(edit, str) else json.dumps(edit(json.loads(config_path.read_text()))))
    before = tree(workdir)
    code = command_module("sample_ddim").main(
        [
            "--pipeline",
            str(folder),
            "--output_dir",
            str(workdir / "outputs" / "samples"),
            "--num_samples",
            "2",
            "--num_inference_steps",
            "2",
        ]
    )
    assert_refused(code, capsys.readouterr().err, *expected)
    assert tree(workdir) == before
