"""Writes that are interrupted (Ctrl-C, SIGTERM), fail half-way (a full disk) or race another run: every file
that existed before is kept, byte for byte, no half-written or staging file is left, and of two runs into
one folder each either gets a folder of its own (the sampler) or exactly one wins (the converter).
"""

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT, assert_refused, convert_args, tree

from pipeline_mnist_ddim.tools.commands import interpolate as interpolate_command
from pipeline_mnist_ddim.tools.sample import claim_output_dir


pytestmark = pytest.mark.usefixtures("one_thread")


# ================================================================= the converter


def test_ctrl_c_during_the_save_keeps_the_replaced_folder_and_leaves_no_staging(
    workdir, converter, our_folder, monkeypatch
):
    def interrupted(self, save_directory, **kwargs):
        Path(save_directory, "half-written.safetensors").write_bytes(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline_mnist_ddim.pipeline_mnist_ddim.MNISTDDIMPipeline.save_pretrained", interrupted)
    before = tree(workdir)
    code, stderr = converter(*convert_args(workdir / "inputs" / "ckpt.pt", our_folder, "--overwrite"))
    assert code == 130 and "interrupted" in stderr.splitlines() and "Traceback" not in stderr
    assert tree(workdir) == before


def test_a_folder_written_meanwhile_by_someone_else_is_kept_and_the_loser_says_so(workdir, converter, monkeypatch):
    """Another process finishes first, between our checks and our rename: its folder wins, intact."""
    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline

    target = workdir / "outputs" / "new"
    real_save = MNISTDDIMPipeline.save_pretrained

    def save_while_another_writer_finishes(self, save_directory, **kwargs):
        real_save(self, save_directory, **kwargs)
        target.mkdir()
        (target / "theirs.txt").write_text("the other conversion")

    monkeypatch.setattr(MNISTDDIMPipeline, "save_pretrained", save_while_another_writer_finishes)
    code, stderr = converter(*convert_args(workdir / "inputs" / "ckpt.pt", target))
    assert_refused(code, stderr, "written by another process")
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in (workdir / "outputs").iterdir()) == ["keep.txt", "new"]  # no staging left


def _converter_process(checkpoint, output_dir, prelude=""):
    code = textwrap.dedent(prelude) + textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        import convert_checkpoint
        sys.exit(convert_checkpoint.main(["--checkpoint", {str(checkpoint)!r}, "--output_dir", {str(output_dir)!r},
                                          "--text_encoder", "none"]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow  # two fresh processes
def test_two_racing_conversions_into_one_new_folder_exactly_one_wins(workdir):
    target = workdir / "outputs" / "race"
    racers = [_converter_process(workdir / "inputs" / "ckpt.pt", target) for _ in range(2)]
    results = [(racer.wait(timeout=300), racer.stderr.read()) for racer in racers]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser_stderr = next(stderr for code, stderr in results if code == 2)
    assert_refused(2, loser_stderr)  # "not empty" or "written by another process", depending on timing
    assert (target / "model_index.json").is_file()
    assert sorted(p.name for p in (workdir / "outputs").iterdir()) == ["keep.txt", "race"]


@pytest.mark.slow  # a fresh process
def test_sigterm_during_the_save_removes_the_staging_folder(workdir):
    # The process terminates itself half-way through writing, as `kill` or a job scheduler would.
    prelude = """
        import os, signal
        from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
        real_save = MNISTDDIMPipeline.save_pretrained
        def save_then_get_killed(self, save_directory, **kwargs):
            real_save(self, save_directory, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)
        MNISTDDIMPipeline.save_pretrained = save_then_get_killed
    """
    before = tree(workdir)
    process = _converter_process(workdir / "inputs" / "ckpt.pt", workdir / "outputs" / "killed", prelude)
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, process.stderr.read()
    assert tree(workdir) == before  # neither the folder nor a .tmp-killed-* staging folder


# ================================================================= mnist-ddim-sample and mnist-ddim-interpolate


def test_sampler_on_a_full_disk_keeps_the_earlier_run(sampler, workdir, monkeypatch):
    earlier = workdir / "outputs" / "samples"
    earlier.mkdir()
    for name in ("unconditional_samples.png", "conditional_samples.png", "settings.json"):
        (earlier / name).write_text(f"earlier {name}")

    def fill_the_disk(images, path, nrow=8):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr("pipeline_mnist_ddim.tools.sample.save_grid", fill_the_disk)
    before = tree(workdir)
    assert_refused(*sampler("--overwrite")[:2], "no space left on the device")
    assert tree(workdir) == before


def _claim(args):
    output_dir, barrier = args
    barrier.wait()
    return claim_output_dir(output_dir, False)[0]


def test_concurrent_runs_into_one_folder_each_claim_their_own(tmp_path):
    """Eight processes claiming at the same moment get eight different folders: output_dir, run-2 .. run-8."""
    output = tmp_path / "same"
    (output / "run-3").mkdir(parents=True)  # an empty run folder is free, as before
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        barrier = manager.Barrier(8)
        with context.Pool(8) as pool:
            claimed = pool.map(_claim, [(str(output), barrier)] * 8)
    expected = [str(output)] + [str(output / f"run-{n}") for n in range(2, 9)]
    assert sorted(claimed) == sorted(expected)
    for folder in claimed:
        assert [p.name for p in Path(folder).iterdir() if p.is_file()] == ["settings.json"]


def test_a_run_started_meanwhile_gets_the_next_folder(sampler, workdir, monkeypatch):
    """The folder that looked free when sampling began is claimed by another run before this one writes."""
    import pipeline_mnist_ddim.tools.sample as sample_tool

    output = workdir / "outputs" / "same"
    real_claim = sample_tool.claim_output_dir

    def claim_after_another_run(output_dir, overwrite):
        other, _ = real_claim(output_dir, overwrite)  # the other run, finishing first
        (Path(other) / "settings.json").write_text("the other run")
        return real_claim(output_dir, overwrite)

    monkeypatch.setattr(sample_tool, "claim_output_dir", claim_after_another_run)
    code, stderr, _ = sampler("--output_dir", output)
    assert code == 0, stderr
    assert (output / "settings.json").read_text() == "the other run"
    assert json.loads((output / "run-2" / "settings.json").read_text())["output_dir"] == str(output / "run-2")


def test_a_failed_write_releases_the_claimed_folder(sampler, workdir, monkeypatch):
    def fail(images, path, nrow=8):
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr("pipeline_mnist_ddim.tools.sample.save_grid", fail)
    before = tree(workdir)
    assert_refused(*sampler("--output_dir", workdir / "outputs" / "new" / "samples")[:2], "no space left")
    assert tree(workdir) == before


def test_interpolate_that_fails_writing_leaves_no_output_folder(workdir, capsys, monkeypatch, tiny_pipeline):
    monkeypatch.setattr(
        "pipeline_mnist_ddim.conversion.folders.load_pipeline_folder", lambda source=None, dtype=None: tiny_pipeline
    )
    real_save_grid = __import__("pipeline_mnist_ddim.tools.interpolation", fromlist=["save_grid"]).save_grid
    calls = []

    def second_write_fails(images, path, nrow=8):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", path)
        real_save_grid(images, path, nrow=nrow)

    monkeypatch.setattr("pipeline_mnist_ddim.tools.interpolation.save_grid", second_write_fails)
    argv = ["--sections", "latents", "prompts", "--num_pairs", "1", "--prompt_pairs", "3,8", "--num_frames", "2"]
    before = tree(workdir)
    code = interpolate_command.main(
        [*argv, "--num_inference_steps", "2", "--output_dir", str(workdir / "outputs" / "fig")]
    )
    assert_refused(code, capsys.readouterr().err, "no space left")
    assert len(calls) == 2 and tree(workdir) == before  # the first figure, written, was removed with the folder
