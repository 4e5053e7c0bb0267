"""A pipeline folder checked before diffusers builds anything from it, and its weights checked once loaded.

A hand-edited folder can make diffusers allocate gigabytes (``num_train_timesteps`` 1e9, ``sample_size`` 1e6),
abort the process (a tokenizer's ``model_max_length`` 1e9 in Rust), recurse until Python gives up (a deeply nested
``model_index.json``), fail mid-run, or, worst, sample wrong images with exit code 0 (a random text encoder,
``beta_end < beta_start``). `check_pipeline_folder` reads only JSON and the safetensors headers (no torch, no code
run) and refuses each such folder with one sentence; `check_loaded_pipeline` then compares what was built with the
weight files, so that no weight is left on the meta device or freshly initialised.

The bounds are generous for this project (the lesson: 32x32 images, 1000 steps, CLIP's 77 tokens and width 768).
"""

import os
from typing import Iterable, List, Optional, Set

from pipeline_mnist_ddim.conversion.folder_reader import (
    FolderReader,
    is_number,
    is_whole,
    shown,
    weight_header,
)


MAX_INDEX_BYTES = 64 * 1024
MAX_TOKENIZER_BYTES = 32 * 1024 * 1024  # CLIP's tokenizer.json: 3.6 MB
MAX_TRAIN_TIMESTEPS = 10_000
MAX_SAMPLE_SIZE = 128
# Far above any Lesson 5e network (base 128, context 768, one 64-wide head), far below what exhausts a machine:
# a crafted folder or checkpoint (the converter's caps too) must not make us allocate tens of GB.
MAX_WIDTHS = {"base_channels": 256, "cross_attention_dim": 4096, "transformer_inner_dim": 512}
MAX_TOKENS = 1024  # model_max_length, max_position_embeddings, a compact encoder's sequence_length
MAX_VOCAB = 1_000_000
MAX_LAYERS = 48
MAX_INTERMEDIATE = 16_384
MAX_COMPACT_ELEMENTS = 2**28  # prompts x tokens x width of a compact encoder's table (1 GiB in float32)

PIPELINE_CLASS = "MNISTDDIMPipeline"
UNET_CLASS = ["unet_mnist", "MNISTUNet2DConditionModel"]
SCHEDULERS = (
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
)
TEXT_ENCODERS = (["transformers", "CLIPTextModel"], ["compact_text_encoder", "CompactTextEncoder"])
TOKENIZERS = ("PreTrainedTokenizerFast", "CLIPTokenizerFast", "CLIPTokenizer", "TokenizersBackend")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def _require_whole(folder: FolderReader, where: str, config: dict, key: str, low: int, high: int, default=None) -> int:
    value = config.get(key, default)
    if not is_whole(value, low, high):
        raise folder.fail(where, f"{key} is {shown(value)}, expected a whole number from {low} to {high}")
    return value


def _component(index: dict, name: str) -> Optional[List[str]]:
    value = index.get(name)
    if value is None or value == [None, None]:
        return None
    return value


# ---------------------------------------------------------------------------- before loading


def check_pipeline_folder(folder: str) -> None:
    """Refuses a local pipeline folder whose configs, code or weight headers could not give this pipeline.

    Reads JSON and safetensors headers only: nothing is built, imported or run. Raises `PipelineFolderError`.
    """
    f = FolderReader(folder)
    index = f.json("model_index.json", MAX_INDEX_BYTES)
    class_name = index.get("_class_name")
    if isinstance(class_name, list) and len(class_name) == 2 and class_name[1] == PIPELINE_CLASS:
        module = class_name[0]
        # A module name, never a path: diffusers would import <folder>/<module>.py
        if not isinstance(module, str) or not module.isidentifier():
            raise f.fail("model_index.json", f"_class_name names the module {shown(module)}, not a Python name")
        f.code(module + ".py")
    elif class_name != PIPELINE_CLASS:
        raise f.fail("model_index.json", f"_class_name is {shown(class_name)}, not this project's {PIPELINE_CLASS}")
    expected = {"unet", "scheduler", "text_encoder", "tokenizer"}
    unknown = sorted(k for k in index if not k.startswith("_") and k not in expected)
    if unknown:
        raise f.fail("model_index.json", f"unknown components {', '.join(map(shown, unknown))}")

    unet = _check_unet(f, index)
    _check_scheduler(f, index)
    _check_text_components(f, index, unet.get("cross_attention_dim", 768))


def _declared(f: FolderReader, index: dict, name: str, allowed: Iterable, what: str) -> Optional[List[str]]:
    declared = _component(index, name)
    if declared is None:
        return None
    if declared not in [list(a) for a in allowed]:
        choices = " or ".join(str(list(a)) for a in allowed)
        raise f.fail("model_index.json", f"{name} is declared as {shown(declared)}, not {what} ({choices})")
    return declared


def _check_unet(f: FolderReader, index: dict) -> dict:
    if _declared(f, index, "unet", [UNET_CLASS], "the lesson's UNet") is None:
        raise f.fail("model_index.json", "no unet: every pipeline of this project has one")
    f.code(os.path.join("unet", "unet_mnist.py"))
    where = "unet/config.json"
    config = f.json(where)
    if config.get("_class_name") != UNET_CLASS[1]:
        raise f.fail(where, f"_class_name is {shown(config.get('_class_name'))}, not {UNET_CLASS[1]}")
    size = _require_whole(f, where, config, "sample_size", 8, MAX_SAMPLE_SIZE, 32)
    if size % 8:  # three downsamplings by 2
        raise f.fail(where, f"sample_size is {size}, not a multiple of 8")
    in_channels = config.get("in_channels", 1)
    if in_channels not in (1, 3) or isinstance(in_channels, bool) or config.get("out_channels", 1) != in_channels:
        raise f.fail(
            where,
            f"in_channels {shown(in_channels)} and out_channels {shown(config.get('out_channels', 1))}: "
            "expected 1 or 3, the same for both",
        )
    base = _require_whole(f, where, config, "base_channels", 32, MAX_WIDTHS["base_channels"], 128)
    if base % 32:
        raise f.fail(where, f"base_channels is {base}, not a multiple of 32 (GroupNorm uses 32 groups)")
    for key, default in (("cross_attention_dim", 768), ("transformer_inner_dim", 64)):
        _require_whole(f, where, config, key, 1, MAX_WIDTHS[key], default)
    dropout = config.get("dropout", 0.0)
    if not is_number(dropout) or not 0 <= dropout < 1:
        raise f.fail(where, f"dropout is {shown(dropout)}, expected a number in [0, 1)")
    weight_header(f, "unet")
    return config


def _check_scheduler(f: FolderReader, index: dict) -> int:
    declared = _component(index, "scheduler")
    if declared is None or not (
        isinstance(declared, list) and len(declared) == 2 and declared[0] == "diffusers" and declared[1] in SCHEDULERS
    ):
        raise f.fail(
            "model_index.json",
            f"scheduler is declared as {shown(declared)}, not one of diffusers' {', '.join(SCHEDULERS)}",
        )
    where = "scheduler/scheduler_config.json"
    config = f.json(where)
    if config.get("_class_name") != declared[1]:
        raise f.fail(
            where, f"_class_name is {shown(config.get('_class_name'))}, but model_index.json says {declared[1]}"
        )
    steps = _require_whole(f, where, config, "num_train_timesteps", 1, MAX_TRAIN_TIMESTEPS, 1000)
    betas = config.get("trained_betas")
    if betas is not None:
        if not isinstance(betas, list):
            raise f.fail(where, f"trained_betas is {shown(betas)}, not a list of numbers")
        finite = all(is_number(b) and 0 < b < 1 for b in betas)
        product = 1.0
        for beta in betas if finite else ():
            product *= 1 - beta  # the last cumulative alpha is the smallest: it must stay above 0
        if len(betas) != steps or not finite or not 0 < product <= 1:
            raise f.fail(
                where,
                f"the scheduler's noise levels are unusable ({len(betas)} cumulative alphas for {steps} steps, "
                "each beta must be in (0, 1))",
            )
    start, end = config.get("beta_start", 0.0001), config.get("beta_end", 0.02)
    if not (is_number(start) and is_number(end) and 0 < start <= end < 1):
        raise f.fail(
            where, f"beta_start {shown(start)} and beta_end {shown(end)}: expected 0 < beta_start <= beta_end < 1"
        )
    for key, choices in (("beta_schedule", BETA_SCHEDULES), ("timestep_spacing", TIMESTEP_SPACINGS)):
        if key in config and config[key] not in choices:
            raise f.fail(where, f"{key} is {shown(config[key])}, expected one of {', '.join(choices)}")
    # The lesson's 0; diffusers' configs often say 1. Larger offsets push the last timestep past the schedule.
    _require_whole(f, where, config, "steps_offset", 0, 1, 0)
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise f.fail(where, f"prediction_type is {shown(config.get('prediction_type'))}: the lesson predicts epsilon")
    for key in ("clip_sample", "thresholding", "set_alpha_to_one", "rescale_betas_zero_snr"):
        if key in config and not isinstance(config[key], bool):
            raise f.fail(where, f"{key} is {shown(config[key])}, expected true or false")
    return steps


def _check_text_components(f: FolderReader, index: dict, context_width: int) -> None:
    encoder = _declared(f, index, "text_encoder", TEXT_ENCODERS, "a CLIP text model or the compact encoder")
    tokenizer = _component(index, "tokenizer")
    if (encoder is None) != (tokenizer is None):
        raise f.fail("model_index.json", "a text encoder and a tokenizer go together: one of them is missing")
    if encoder is None:
        return
    if not (isinstance(tokenizer, list) and len(tokenizer) == 2 and tokenizer[0] == "transformers"):
        raise f.fail("model_index.json", f"tokenizer is declared as {shown(tokenizer)}, not a transformers tokenizer")
    if tokenizer[1] not in TOKENIZERS:
        raise f.fail(
            "model_index.json", f"tokenizer is declared as {shown(tokenizer)}, not one of {', '.join(TOKENIZERS)}"
        )

    where = "text_encoder/config.json"
    config = f.json(where)
    if encoder[1] == "CompactTextEncoder":
        f.code(os.path.join("text_encoder", "compact_text_encoder.py"))
        prompts = config.get("prompts")
        if (
            not isinstance(prompts, list)
            or not 1 <= len(prompts) <= 1000
            or not all(isinstance(p, str) for p in prompts)
        ):
            raise f.fail(where, "prompts must be a list of 1 to 1000 texts")
        length = _require_whole(f, where, config, "sequence_length", 1, MAX_TOKENS, 77)
        width = _require_whole(f, where, config, "hidden_size", 1, MAX_WIDTHS["cross_attention_dim"], 768)
        if len(prompts) * length * width > MAX_COMPACT_ELEMENTS:
            raise f.fail(where, f"a table of {len(prompts)} x {length} x {width} values is implausibly large")
        vocab_size = None  # its tokenizer's ids are rows; the encoder itself refuses others
        max_positions = MAX_TOKENS
    else:
        if config.get("model_type") != "clip_text_model":
            raise f.fail(where, f"model_type is {shown(config.get('model_type'))}, not clip_text_model")
        width = _require_whole(f, where, config, "hidden_size", 1, MAX_WIDTHS["cross_attention_dim"])
        heads = _require_whole(f, where, config, "num_attention_heads", 1, width)
        if width % heads:
            raise f.fail(where, f"hidden_size {width} is not a multiple of num_attention_heads {heads}")
        _require_whole(f, where, config, "num_hidden_layers", 1, MAX_LAYERS)
        _require_whole(f, where, config, "intermediate_size", 1, MAX_INTERMEDIATE)
        vocab_size = _require_whole(f, where, config, "vocab_size", 1, MAX_VOCAB)
        max_positions = _require_whole(f, where, config, "max_position_embeddings", 1, MAX_TOKENS)
        weight_header(f, "text_encoder")
    if width != context_width:
        raise f.fail(where, f"hidden_size {width} differs from the UNet's cross_attention_dim {context_width}")

    where = "tokenizer/tokenizer_config.json"
    config = f.json(where)
    _require_whole(f, where, config, "model_max_length", 1, max_positions)
    ids = _token_ids(f)
    if vocab_size is not None and ids and max(ids) >= vocab_size:
        raise f.fail("tokenizer", f"token id {max(ids)} is beyond the text encoder's vocab_size {vocab_size}")


def _token_ids(f: FolderReader) -> Set[int]:
    """Every id the tokenizer can emit: its vocabulary's and its added tokens'."""
    ids: Set[int] = set()
    if os.path.isfile(f.path("tokenizer", "tokenizer.json")):
        where = "tokenizer/tokenizer.json"
        data = f.json(where, MAX_TOKENIZER_BYTES)
        model = data.get("model")
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if isinstance(vocab, dict):
            values = list(vocab.values())
        elif isinstance(vocab, list):  # Unigram: [token, score] pairs, ids are positions
            values = list(range(len(vocab)))
        else:
            raise f.fail(where, "has no vocabulary (model.vocab)")
        values += [t.get("id") for t in data.get("added_tokens") or [] if isinstance(t, dict)]
        if not all(is_whole(v, 0, 2**31 - 1) for v in values):
            raise f.fail(where, "token ids must be whole numbers from 0")
        ids.update(values)
    elif os.path.isfile(f.path("tokenizer", "vocab.json")):  # a slow CLIPTokenizer's files
        vocab = f.json("tokenizer/vocab.json", MAX_TOKENIZER_BYTES)
        if not all(is_whole(v, 0, 2**31 - 1) for v in vocab.values()):
            raise f.fail("tokenizer/vocab.json", "token ids must be whole numbers from 0")
        ids.update(vocab.values())
    else:
        raise f.fail("tokenizer", "neither tokenizer.json nor vocab.json")
    return ids


# ---------------------------------------------------------------------------- after loading


def _normalized(name: str) -> str:
    # transformers 4.x writes CLIP's weights as text_model.*, 5.x without the prefix; either loads.
    return name[len("text_model.") :] if name.startswith("text_model.") else name


def check_loaded_pipeline(pipe, folder: str) -> None:
    """Every weight the built UNet and text encoder hold came from the folder's files (none on the meta device,
    none initialised at random because its tensor was removed)."""
    f = FolderReader(folder)
    for component in ("unet", "text_encoder"):
        module = getattr(pipe, component, None)
        if module is None or not os.path.isdir(f.path(component)):
            continue
        stored = {_normalized(n) for n in weight_header(f, component)}
        state = module.state_dict()
        missing = sorted(n for n in state if _normalized(n) not in stored)
        meta = sorted(n for n, t in state.items() if getattr(t, "is_meta", False))
        if missing or meta:
            names = missing or meta
            raise f.fail(
                component,
                f"{len(names)} of its {len(state)} weights are not in its weights file (e.g. {shown(names[0])}): "
                "they would be empty or random",
            )
