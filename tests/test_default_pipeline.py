"""The embedded default: self-contained, small, and the main job samples from it offline."""

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

import pipeline_mnist_ddim
from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR


PACKAGE_DIR = os.path.dirname(pipeline_mnist_ddim.__file__)
REPO_DIR = os.path.dirname(PACKAGE_DIR)
sync_remote_code = load_script(Path(REPO_DIR) / "scripts" / "sync_remote_code.py")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest's: a shared CPU makes two threads wait on each other


def test_code_files_are_the_package_modules_verbatim():
    """What CI holds the default to: ``scripts/sync_remote_code.py --check`` finds nothing stale."""
    done = subprocess.run(
        [sys.executable, os.path.join(REPO_DIR, "scripts", "sync_remote_code.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for copy, module in sync_remote_code.REMOTE_CODE_COPIES.items():
        assert filecmp.cmp(os.path.join(REPO_DIR, module), os.path.join(REPO_DIR, copy), shallow=False)


def test_sync_remote_code_finds_and_replaces_a_stale_copy_and_nothing_else(tmp_path):
    for copy, module in sync_remote_code.REMOTE_CODE_COPIES.items():
        for relative in (copy, module):
            (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / relative).write_bytes(open(os.path.join(REPO_DIR, relative), "rb").read())
    stale_copy = next(iter(sync_remote_code.REMOTE_CODE_COPIES))
    (tmp_path / stale_copy).write_bytes(b"# edited by hand\n")
    assert sync_remote_code.stale_copies(str(tmp_path)) == [stale_copy]
    assert sync_remote_code.sync(str(tmp_path)) == [stale_copy]
    assert sync_remote_code.stale_copies(str(tmp_path)) == []
    module = sync_remote_code.REMOTE_CODE_COPIES[stale_copy]
    assert (tmp_path / stale_copy).read_bytes() == (tmp_path / module).read_bytes()


def test_weights_are_safetensors_and_the_folder_is_under_20_mb():
    sizes = [os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(DEFAULT_PIPELINE_DIR) for f in files]
    assert sum(sizes) < 20 * 2**20
    assert os.path.isfile(os.path.join(DEFAULT_PIPELINE_DIR, "unet", "diffusion_pytorch_model.safetensors"))
    assert not any(f.endswith((".bin", ".pt")) for _, _, files in os.walk(DEFAULT_PIPELINE_DIR) for f in files)
    with open(os.path.join(DEFAULT_PIPELINE_DIR, "README.md")) as f:
        card = f.read()
    assert "library_name: diffusers" in card and "How this default was trained" in card


@pytest.mark.slow  # samples the default, twice
def test_main_job_writes_the_lesson_outputs_and_never_overwrites(tmp_path):
    command = [
        sys.executable,
        os.path.join(REPO_DIR, "scripts", "sample_ddim.py"),
        "--output_dir",
        str(tmp_path),
        "--num_samples",
        "4",
        "--num_inference_steps",
        "2",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    for _ in range(2):
        subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    for folder in (tmp_path, tmp_path / "run-2"):
        for name in ("unconditional_samples.png", "conditional_samples.png", "conditional_sample_prompts.txt"):
            assert (folder / name).is_file(), f"{folder / name} missing"
        settings = json.loads((folder / "settings.json").read_text())
        assert settings["seed"] == 42 and settings["num_inference_steps"] == 2
    prompts = (tmp_path / "conditional_sample_prompts.txt").read_text().split()
    assert len(prompts) == 4
    # the same seed gives the same images in both runs
    assert (tmp_path / "conditional_samples.png").read_bytes() == (
        tmp_path / "run-2" / "conditional_samples.png"
    ).read_bytes()


@pytest.mark.slow  # fresh processes
def test_main_job_rejects_bad_arguments_clearly(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO_DIR, "scripts", "sample_ddim.py"),
            "--pipeline",
            str(tmp_path / "nowhere"),
            "--output_dir",
            str(tmp_path / "out"),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "error:" in result.stderr
