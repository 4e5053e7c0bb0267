"""mnist-ddim-interpolate checks every setting before drawing: a bad one ends in one `error:` line with exit
code 2, before the pipeline is loaded wherever the arguments alone tell, and leaves no output folder.
"""

import os

import pytest
from conftest import assert_refused, tree

from pipeline_mnist_ddim.tools.commands import interpolate as interpolate_command


pytestmark = pytest.mark.usefixtures("one_thread")


def _through_a_file(workdir):
    return workdir / "outputs" / "keep.txt" / "figures"


INTERPOLATE_CASES = {
    # id: (arguments, texts the message must hold, whether the pipeline may be loaded first)
    "--prompt_pairs 3": (
        ["--sections", "latents", "prompts", "--prompt_pairs", "3"],
        ["--prompt_pairs", "'3'"],
        False,
    ),
    "--prompt_pairs 3,": (["--sections", "prompts", "--prompt_pairs", "3,"], ["--prompt_pairs"], False),
    "--prompt_pairs 1,2,3": (["--sections", "prompts", "--prompt_pairs", "1,2,3"], ["--prompt_pairs"], False),
    "--num_pairs 0": (["--num_pairs", "0"], ["--num_pairs", "from 1 to 16"], False),
    "--consistency_samples 0": (["--consistency_samples", "0"], ["--consistency_samples", "from 1 to 64"], False),
    "--num_frames 1e9": (["--num_frames", "1000000000"], ["--num_frames", "from 2 to 64"], False),
    "--num_frames 1": (["--num_frames", "1"], ["--num_frames", "from 2 to 64"], False),
    "--num_inference_steps 0": (["--num_inference_steps", "0"], ["--num_inference_steps"], False),
    "--consistency_steps 5000": (["--consistency_steps", "10", "5000"], ["--consistency_steps", "1 to 1000"], False),
    "--consistency_steps 0": (["--consistency_steps", "0"], ["--consistency_steps"], False),
    "--seed 2**64": (["--seed", str(2**64)], ["--seed", str(2**64)], False),
    "an empty --latent_prompt": (["--latent_prompt", " "], ["--latent_prompt is empty"], False),
    "an output folder through a file": ([], ["keep.txt", "is a file"], False),
    "a word the model never saw": (
        ["--sections", "prompts", "--prompt_pairs", "3,eleven"],
        ["--prompt_pairs has words this model never saw: eleven"],
        True,
    ),
    "an unknown --consistency_prompt": (
        ["--sections", "consistency", "--consistency_prompt", "twelve"],
        ["--consistency_prompt", "twelve"],
        True,
    ),
}


@pytest.mark.parametrize("case", INTERPOLATE_CASES)
def test_interpolate_refuses_before_drawing_and_leaves_no_output_folder(
    case, workdir, capsys, monkeypatch, tiny_pipeline
):
    argv, expected, may_load = INTERPOLATE_CASES[case]
    loaded = []

    def load_tiny(source=None, dtype=None):
        loaded.append(source)
        return tiny_pipeline

    monkeypatch.setattr("pipeline_mnist_ddim.conversion.folders.load_pipeline_folder", load_tiny)
    monkeypatch.setattr("pipeline_mnist_ddim.tools.interpolation.decode", _drawing_forbidden)
    output = _through_a_file(workdir) if case == "an output folder through a file" else workdir / "outputs" / "fig"
    before = tree(workdir)
    code = interpolate_command.main([*argv, "--output_dir", str(output), "--device", "cpu"])
    assert_refused(code, capsys.readouterr().err, *expected)
    assert bool(loaded) == may_load
    assert tree(workdir) == before


def _drawing_forbidden(*args, **kwargs):
    pytest.fail("interpolate drew a figure before refusing")


def test_interpolate_with_valid_settings_writes_its_files(workdir, capsys, monkeypatch, tiny_pipeline):
    """Guards the rows above: the same set-up with good settings draws and writes."""
    monkeypatch.setattr(
        "pipeline_mnist_ddim.conversion.folders.load_pipeline_folder", lambda source=None, dtype=None: tiny_pipeline
    )
    argv = ["--sections", "latents", "prompts", "--num_pairs", "1", "--prompt_pairs", "3,8", "--num_frames", "2"]
    output = workdir / "outputs" / "fig"
    code = interpolate_command.main([*argv, "--num_inference_steps", "2", "--output_dir", str(output)])
    assert code == 0, capsys.readouterr().err
    assert sorted(os.listdir(output)) == ["interpolation.json", "slerp_latents.png", "slerp_prompts.png"]
