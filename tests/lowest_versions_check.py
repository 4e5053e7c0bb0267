"""Folders written by this project load and draw the same digits on the lowest declared versions.

Run by ``scripts/check_lowest_versions.sh`` (and so by ``.ci/run``) in three steps:

    python tests/lowest_versions_check.py requirements              # setup.cfg's install_requires, each
                                                                    # declared minimum pinned (torch aside)
    python tests/lowest_versions_check.py write WORK [DEFAULT_DIR]  # main env: folders + reference numbers
    VENV/bin/python tests/lowest_versions_check.py check WORK       # lowest env, package not importable
    python tests/lowest_versions_check.py check-resaved WORK        # main env: what the lowest env saved

``write`` (the package importable) writes two tiny pipeline folders with the package's writer
(one in float16 with the default's word-level tokenizer, one with a byte-level BPE
`CLIPTokenizer` as converted pipelines hold) and records for them and for the embedded default: the tokenizer's ids for a set of
prompts, the text encoder's ``last_hidden_state`` and DDIM images from fixed latents; the
default's images are judged by the project's digit classifier, so the reference shows the
prompted digits. ``check`` loads each folder ALONE (remote code, this package hidden),
requires no missing or unexpected text-encoder keys, one dtype throughout, the same ids and
the same numbers within tolerances; a randomly initialised text encoder changes them by
orders of magnitude more. It then re-saves each folder from the lowest env, and
``check-resaved`` loads those in the main env and requires the same numbers again.
"""

import configparser
import json
import os
import sys

import numpy as np
import torch
from hidden_package import HIDE_PACKAGE


REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_PINNED = ("torch",)  # torch 2.13.0 on both sides: an older one would be a multi-GB CUDA download
PROMPTS = ["0", "one", "2", "three", "4", "five", "6", "seven", "8", "nine"]
STEPS = {"tiny": 5, "clip": 5, "default": 20}  # the default reads as the prompted digits at 20 steps already
# float32 CPU on both sides; the libraries' kernels may differ in summation order only
TEXT_TOLERANCE = 1e-5
IMAGE_TOLERANCE = 2e-3
FOLDERS = ("tiny", "clip", "default")
# Every field of the converter's model card template (huggingface_hub renders it with jinja2)
CARD_FIELDS = {
    "title": "MNIST DDIM (Lesson 5e -> diffusers), base width 32",
    "checkpoint": "gaussian_diffusion_ddpm-100.pt",
    "step": 100,
    "loss": ", loss 0.0421",
    "base_channels": 32,
    "in_channels": 1,
    "cross_attention_dim": 32,
    "text_encoder": "none",
    "details": "A paragraph.\n\nAnother one.",
    "load": 'pipe = DiffusionPipeline.from_pretrained("user/mnist-ddim", trust_remote_code=True)',
}


def requirements() -> list:
    """setup.cfg's install_requires with every ``>=`` minimum pinned (torch aside)."""
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO_DIR, "setup.cfg"))
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    pinned = []
    for line in lines:
        name, _, minimum = line.partition(">=")
        if minimum and name.strip() not in NOT_PINNED:
            line = f"{name.strip()}=={minimum.split(',')[0].strip()}"
        pinned.append(line)
    return pinned


def latents(seed: int = 0) -> torch.Tensor:
    return torch.randn(len(PROMPTS), 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def measure(pipe, num_inference_steps: int) -> dict:
    """Everything compared across versions, as numpy arrays."""
    input_ids = pipe.tokenizer(
        PROMPTS, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        hidden = pipe.text_encoder(input_ids).last_hidden_state
    images = pipe(prompt=PROMPTS, latents=latents(), num_inference_steps=num_inference_steps, output_type="np").images
    return {"input_ids": input_ids.numpy(), "hidden": hidden.float().numpy(), "images": np.asarray(images, np.float32)}


def load_alone(folder: str):
    """The folder through diffusers and its own remote code; the text encoder's loading info too."""
    from diffusers import DiffusionPipeline
    from transformers import CLIPTextModel

    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    _, info = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if len(info[kind]):
            raise AssertionError(f"{folder}: text encoder loads with {kind} {sorted(info[kind])[:5]}")
    dtypes = {pipe.unet.dtype, pipe.text_encoder.dtype}
    if dtypes != {torch.float32}:
        raise AssertionError(f"{folder}: a plain load gives dtypes {dtypes}, expected float32 throughout")
    return pipe


def compare(folder: str, measured: dict, reference: dict) -> str:
    if not np.array_equal(measured["input_ids"], reference["input_ids"]):
        raise AssertionError(f"{folder}: tokenizer ids differ:\n{measured['input_ids']}\n{reference['input_ids']}")
    text_diff = float(np.abs(measured["hidden"] - reference["hidden"]).max())
    image_diff = float(np.abs(measured["images"] - reference["images"]).max())
    if text_diff > TEXT_TOLERANCE or image_diff > IMAGE_TOLERANCE:
        raise AssertionError(
            f"{folder}: text encoder max abs diff {text_diff:.2e} (tolerance {TEXT_TOLERANCE}), "
            f"images {image_diff:.2e} (tolerance {IMAGE_TOLERANCE})"
        )
    return f"{folder}: same ids, text encoder max abs diff {text_diff:.1e}, images {image_diff:.1e}"


def render_card(template: str) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    card_data = ModelCardData(library_name="diffusers", license="mit", tags=["diffusers", "mnist"])
    return str(ModelCard.from_template(card_data, template_str=template, **CARD_FIELDS))


def versions() -> str:
    import diffusers
    import huggingface_hub
    import jinja2
    import transformers

    return (
        f"diffusers {diffusers.__version__}, transformers {transformers.__version__}, torch {torch.__version__}, "
        f"huggingface_hub {huggingface_hub.__version__}, jinja2 {jinja2.__version__}"
    )


# ---------------------------------------------------------------- the three steps


def bytes_to_unicode() -> dict:
    """CLIP's byte -> printable character table (GPT-2's), as its vocabulary spells bytes."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def tiny_clip_pipeline(unet, vocabulary_dir: str):
    """A byte-level BPE `CLIPTokenizer` (CLIP's file formats, a few merges) and a CLIP text model:
    what a pipeline converted with the lesson's real CLIP holds, only small."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline

    characters = list(bytes_to_unicode().values())
    merged = ["se", "sev", "seve", "seven</w>", "on", "one</w>"]
    tokens = characters + [c + "</w>" for c in characters] + merged + ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(vocabulary_dir)
    with open(os.path.join(vocabulary_dir, "vocab.json"), "w") as f:
        json.dump({token: i for i, token in enumerate(tokens)}, f)
    with open(os.path.join(vocabulary_dir, "merges.txt"), "w") as f:
        f.write("#version: 0.2\ns e\nse v\nsev e\nseve n</w>\no n\non e</w>\n")
    with open(os.path.join(vocabulary_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 8}, f)
    tokenizer = CLIPTokenizer.from_pretrained(vocabulary_dir)
    torch.manual_seed(1)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=1,
            max_position_embeddings=8,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    return MNISTDDIMPipeline(
        unet=unet, scheduler=lesson_ddim_scheduler(), text_encoder=text_encoder, tokenizer=tokenizer
    )


def write(work: str, default_dir: str = None) -> None:
    import jinja2.meta

    from pipeline_mnist_ddim import DEFAULT_PIPELINE_DIR
    from pipeline_mnist_ddim.conversion.folders import MODEL_CARD_TEMPLATE, save_pipeline_folder
    from pipeline_mnist_ddim.conversion.text_encoders import build_text_encoder
    from pipeline_mnist_ddim.lesson import TEXT_LABELS
    from pipeline_mnist_ddim.lesson.schedulers import lesson_ddim_scheduler
    from pipeline_mnist_ddim.pipeline_mnist_ddim import MNISTDDIMPipeline
    from pipeline_mnist_ddim.tools.classifier import load_default_classifier
    from pipeline_mnist_ddim.tools.metrics import predict_labels
    from pipeline_mnist_ddim.unet_mnist import MNISTUNet2DConditionModel

    torch.manual_seed(0)
    unet = MNISTUNet2DConditionModel(base_channels=32, cross_attention_dim=32)
    text_encoder, tokenizer = build_text_encoder(hidden_size=32, num_layers=1)
    tiny = MNISTDDIMPipeline(
        unet=unet, scheduler=lesson_ddim_scheduler(), text_encoder=text_encoder, tokenizer=tokenizer
    )
    save_pipeline_folder(tiny.to(dtype=torch.float16), os.path.join(work, "tiny"))
    save_pipeline_folder(tiny_clip_pipeline(unet, os.path.join(work, "clip_vocabulary")), os.path.join(work, "clip"))
    os.symlink(os.path.abspath(default_dir or DEFAULT_PIPELINE_DIR), os.path.join(work, "default"))

    for name in FOLDERS:  # measured as loaded, so both sides start from the same stored weights
        measured = measure(load_alone(os.path.join(work, name)), STEPS[name])
        np.savez(os.path.join(work, f"{name}_reference.npz"), **measured)
    labels = {word: digit for digit, pair in enumerate(TEXT_LABELS) for word in pair}
    images = torch.from_numpy(np.load(os.path.join(work, "default_reference.npz"))["images"]).permute(0, 3, 1, 2)
    predicted = predict_labels(load_default_classifier(), images).tolist()
    wanted = [labels[prompt] for prompt in PROMPTS]
    hits = sum(p == w for p, w in zip(predicted, wanted))
    if hits < 9:  # 10 of 10 from these latents (the default draws ~99% prompted digits at 50 steps)
        raise AssertionError(f"the default's reference images read as {predicted}, prompted {wanted}")
    fields = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(MODEL_CARD_TEMPLATE))
    if fields != {"card_data", *CARD_FIELDS}:
        raise AssertionError(f"the model card template's fields {sorted(fields)} are not CARD_FIELDS")
    card = {"template": MODEL_CARD_TEMPLATE, "rendered": render_card(MODEL_CARD_TEMPLATE)}
    with open(os.path.join(work, "reference.json"), "w") as f:
        json.dump({"versions": versions(), "classifier_labels": predicted, "prompts": PROMPTS, "card": card}, f)
    print(f"reference ({versions()}): default draws {hits}/{len(PROMPTS)} prompted digits (classifier)")


def check(work: str) -> None:
    exec(HIDE_PACKAGE, {})  # the package is unimportable from here on: the folders load on their own code
    for name in FOLDERS:
        folder = os.path.join(work, name)
        pipe = load_alone(folder)
        print(compare(folder, measure(pipe, STEPS[name]), dict(np.load(os.path.join(work, f"{name}_reference.npz")))))
        pipe.save_pretrained(os.path.join(work, f"{name}_resaved"))
    with open(os.path.join(work, "reference.json")) as f:
        reference = json.load(f)
    if render_card(reference["card"]["template"]) != reference["card"]["rendered"]:
        raise AssertionError("the converter's model card renders differently here (huggingface_hub, jinja2)")
    print("model card: the same text")
    print(f"lowest env ({versions()}) matches the main env ({reference['versions']})")


def check_resaved(work: str) -> None:
    for name in FOLDERS:
        folder = os.path.join(work, f"{name}_resaved")
        print(
            compare(
                folder,
                measure(load_alone(folder), STEPS[name]),
                dict(np.load(os.path.join(work, f"{name}_reference.npz"))),
            )
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    step, args = sys.argv[1], sys.argv[2:]
    if step == "requirements":
        print("\n".join(requirements()))
    else:
        {"write": write, "check": check, "check-resaved": check_resaved}[step](*args)
