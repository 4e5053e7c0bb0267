"""Uploads to the Hub give repositories that load, from what was uploaded alone, as remote code.

Checked against a stand-in Hub (tests/hub_server.py) on 127.0.0.1: each way of uploading
(`save_pretrained(push_to_hub=True)`, `push_to_hub()`, `convert_checkpoint.py --push_to_hub`)
runs in its own process pointed at it with ``HF_ENDPOINT``; a further process, in which this
package cannot be imported and whose cache starts empty, downloads every repository and samples. An upload that
cannot work (offline, no token, a malformed repo id) is refused before converting; a failed one says where the
saved folder is.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, assert_refused, convert_args, package_code_in_a_folder, sample_in_process, tree
from hidden_package import HIDE_PACKAGE
from hub_server import HubServer


pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS, SEED, STEPS = ["seven", "3"], 21, 3
REPOS = {"save_pretrained": "user/saved", "push_to_hub": "user/pushed", "convert_checkpoint": "user/converted"}

# Runs with the package importable: builds the pipeline from a local folder's parts, then uploads it two ways.
UPLOAD = r"""
import sys
from diffusers import DDIMScheduler
from transformers import AutoTokenizer, CLIPTextModel
from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
from pipeline_mnist_ddim.unet_mnist import MNISTUNet2DConditionModel

folder, work, saved_repo, pushed_repo = sys.argv[1:5]
pipe = MNISTDDIMPipeline(
    unet=MNISTUNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
    scheduler=DDIMScheduler.from_pretrained(folder, subfolder="scheduler"),
    text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
    tokenizer=AutoTokenizer.from_pretrained(folder, subfolder="tokenizer"),
)
pipe.save_pretrained(work + "/saved", push_to_hub=True, repo_id=saved_repo)
pipe.push_to_hub(pushed_repo)
"""

# Runs where the package is hidden: downloads each repository into an empty cache and samples.
DOWNLOAD_AND_SAMPLE = (
    HIDE_PACKAGE
    + r"""
import json, sys

import numpy as np
import torch
from diffusers import DiffusionPipeline

repos, out, settings = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
for name, repo_id in repos.items():
    pipe = DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(settings["seed"])
    images = pipe(prompt=settings["prompts"], num_inference_steps=settings["steps"], generator=generator,
                  output_type="np").images
    np.save(f"{out}/{name}.npy", images)
    print(name, type(pipe).__module__.split(".")[0], type(pipe.unet).__module__.split(".")[0])
"""
)


def hub_env(server: HubServer, home: Path, importable: bool) -> dict:
    env = dict(
        os.environ,
        HF_ENDPOINT=server.endpoint,
        HF_HUB_OFFLINE="0",
        HF_TOKEN="stand-in-token",
        HF_HOME=str(home),
        HF_MODULES_CACHE=str(home / "modules"),
        HF_HUB_DISABLE_TELEMETRY="1",
        OMP_NUM_THREADS="1",
    )
    if importable:  # this checkout's package, whatever is installed
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return env


def run(argv, env, cwd):
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


@pytest.fixture(scope="module")
def uploads(hub, tiny_pipeline_folder, lesson_checkpoint, text_encoder_folder, tmp_path_factory):
    """Uploads the tiny pipeline the three ways; returns the stand-in Hub."""
    work = tmp_path_factory.mktemp("upload")
    env = hub_env(hub, work / "home", importable=True)
    run(
        [
            sys.executable,
            "-c",
            UPLOAD,
            str(tiny_pipeline_folder),
            str(work),
            REPOS["save_pretrained"],
            REPOS["push_to_hub"],
        ],
        env,
        work,
    )
    run(
        [
            sys.executable,
            str(REPO_ROOT / "convert_checkpoint.py"),
            "--checkpoint",
            str(lesson_checkpoint),
            "--output_dir",
            str(work / "converted"),
            "--text_encoder",
            str(text_encoder_folder),
            "--push_to_hub",
            REPOS["convert_checkpoint"],
        ],
        env,
        work,
    )
    return hub


@pytest.fixture(scope="module")
def tiny_pipeline_folder(tiny_unet, tiny_text_encoder, tmp_path_factory):
    from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline

    folder = tmp_path_factory.mktemp("local") / "pipeline"
    text_encoder, tokenizer = tiny_text_encoder
    MNISTDDIMPipeline(tiny_unet, lesson_ddim_scheduler(), text_encoder, tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def downloaded(uploads, tmp_path_factory):
    """{how it was uploaded: (images, [pipeline module root, unet module root])} from a fresh process."""
    work = tmp_path_factory.mktemp("download")
    settings = json.dumps(dict(prompts=PROMPTS, steps=STEPS, seed=SEED))
    stdout = run(
        [sys.executable, "-c", DOWNLOAD_AND_SAMPLE, json.dumps(REPOS), str(work), settings],
        hub_env(uploads, work / "home", importable=False),
        work,
    )
    modules = {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.split()[:1][0] in REPOS}
    return {name: (np.load(work / f"{name}.npy"), modules[name]) for name in REPOS}


@pytest.fixture(scope="module")
def in_process_images(tiny_unet, tiny_text_encoder):
    return sample_in_process(tiny_unet, *tiny_text_encoder, PROMPTS, STEPS, SEED)


# ---------------------------------------------------------------- what was uploaded


@pytest.mark.slow  # `uploads`: a stand-in Hub and fresh processes
@pytest.mark.parametrize("how", REPOS)
def test_upload_carries_the_code_and_a_model_index_naming_it(uploads, how):
    files = uploads.files(REPOS[how])
    expected = package_code_in_a_folder()
    assert {path: files.get(path) for path in expected} == expected
    index = json.loads(files["model_index.json"])
    assert index["_class_name"] == ["pipeline_mnist_ddim", "MNISTDDIMPipeline"]
    assert index["unet"] == ["unet_mnist", "MNISTUNet2DConditionModel"]
    assert {"unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json", "README.md"} <= set(files)


# ---------------------------------------------------------------- what loads from it


@pytest.mark.slow  # `uploads`: a stand-in Hub and fresh processes
@pytest.mark.parametrize("how", REPOS)
def test_uploaded_repo_loads_without_the_package_as_remote_code(downloaded, how):
    assert downloaded[how][1] == ["diffusers_modules", "diffusers_modules"]


@pytest.mark.slow  # `uploads`: a stand-in Hub and fresh processes
@pytest.mark.parametrize("how", REPOS)
def test_uploaded_repo_samples_the_same_images(downloaded, in_process_images, how):
    images = downloaded[how][0]
    assert images.shape == in_process_images.shape == (2, 32, 32, 1)
    assert np.abs(images - in_process_images).max() <= 1e-6


# ---------------------------------------------------------------- uploads that cannot work, refused before converting


def _offline(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


def _online_without_token(monkeypatch, tmp_path=None):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", "/nonexistent/token")
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", "/nonexistent/stored_tokens")
    monkeypatch.setattr("huggingface_hub.utils._auth._get_token_from_google_colab", lambda: None)


HUB_CASES = {
    "offline": ("someone/mnist-ddim", _offline, ["offline", "HF_HUB_OFFLINE"]),
    "no token": (
        "someone/mnist-ddim",
        _online_without_token,
        ["not logged in", "hf auth login", "huggingface-cli login", "HF_TOKEN"],
    ),
    "a malformed repo id": ("a/b/c", _offline, ["not a Hub repo id"]),
}


@pytest.mark.parametrize("case", HUB_CASES)
def test_upload_that_cannot_work_is_refused_before_converting(
    case, workdir, converter, conversion_forbidden, monkeypatch
):
    repo_id, environment, expected = HUB_CASES[case]
    environment(monkeypatch)
    before = tree(workdir)
    code, stderr = converter(
        *convert_args(workdir / "inputs" / "ckpt.pt", workdir / "outputs" / "out"), "--push_to_hub", repo_id
    )
    assert_refused(code, stderr, *expected)
    assert tree(workdir) == before


def test_failed_upload_says_where_the_saved_folder_is(workdir, converter, monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise RuntimeError("401 Unauthorized")

    # the uploader calls huggingface_hub.create_repo when it uploads (the name is looked up then)
    monkeypatch.setattr(huggingface_hub, "create_repo", refuse)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    output = workdir / "outputs" / "out"
    code, stderr = converter(
        *convert_args(workdir / "inputs" / "ckpt.pt", output), "--push_to_hub", "someone/mnist-ddim"
    )
    assert_refused(code, stderr, "uploading to someone/mnist-ddim failed", "401 Unauthorized", str(output))
    assert (output / "model_index.json").is_file()
