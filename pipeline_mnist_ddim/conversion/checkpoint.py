"""Lesson 5e checkpoint -> `MNISTUNet2DConditionModel` weights, with strict key accounting.

Reading never executes pickled code (``torch.load(weights_only=True)``). Every lesson
key is renamed to a diffusers key or is a known-unused one (the ``residual_proj`` of
equal-width res blocks, which the lesson creates but never applies); anything else,
a missing key or a wrong shape is a :class:`CheckpointError` naming the keys.
"""

import math
import os
import re
import stat
import zipfile
from typing import Dict, Optional, Tuple

import torch

from pipeline_mnist_ddim.conversion.folder_checks import MAX_WIDTHS
from pipeline_mnist_ddim.unet_mnist import MNISTUNet2DConditionModel


WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_unet.")  # DDP, torch.compile, the diffusion wrapper

# (lesson pattern, diffusers replacement), tried in order on the module part of a key.
_MODULE_RENAMES = [
    (r"^time_proj\.1\.", "time_embedding.linear_1."),
    (r"^time_proj\.3\.", "time_embedding.linear_2."),
    (r"^initial_convolution\.", "conv_in."),
    (r"^final_projection\.0\.", "conv_norm_out."),
    (r"^final_projection\.2\.", "conv_out."),
    (r"^downs\.(\d)\.([02])\.", lambda m: f"down_blocks.{m[1]}.resnets.{int(m[2]) // 2}."),
    (r"^downs\.(\d)\.([13])\.", lambda m: f"down_blocks.{m[1]}.attentions.{int(m[2]) // 2}."),
    (r"^downs\.(\d)\.4\.", r"down_blocks.\1.downsamplers.0.conv."),
    (r"^middle\.0\.", "mid_block.resnets.0."),
    (r"^middle\.1\.", "mid_block.attentions.0."),
    (r"^middle\.2\.", "mid_block.resnets.1."),
    (r"^ups\.(\d)\.([024])\.", lambda m: f"up_blocks.{m[1]}.resnets.{int(m[2]) // 2}."),
    (r"^ups\.(\d)\.([135])\.", lambda m: f"up_blocks.{m[1]}.attentions.{int(m[2]) // 2}."),
    (r"^ups\.(\d)\.6\.1\.", r"up_blocks.\1.upsamplers.0.conv."),
]
# Inside a res block or a transformer.
_LEAF_RENAMES = [
    (r"\.block1\.norm\.", ".norm1."),
    (r"\.block1\.proj\.", ".conv1."),
    (r"\.block2\.norm\.", ".norm2."),
    (r"\.block2\.proj\.", ".conv2."),
    (r"\.timestep_proj\.1\.", ".time_emb_proj."),
    (r"\.residual_proj\.", ".conv_shortcut."),
    (r"\.(attn[12])\.to_out\.", r".\1.to_out.0."),
]


# The floating-point types a lesson network is trained, converted (--dtype) or saved in. Others (float8,
# float4) it never used; some of them torch cannot even check for NaN, or have a NaN that check misses.
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# The longest lesson key is under 70 characters: far longer names are not weights of this network, and
# would make renaming and messages slow.
MAX_KEY_CHARS = 256


class CheckpointError(ValueError):
    """The file is not a usable Lesson 5e checkpoint."""


def read_checkpoint(path: str, use_ema: bool = False) -> Tuple[Dict[str, torch.Tensor], dict]:
    """The network weights (prefixes stripped) and metadata (``step``, ``loss``) of a lesson file.

    Accepts the lesson's ``.pt`` (``{"step", "model_state_dict", ...}``), a bare state dict
    ``.pt`` and ``.safetensors``. ``.pt`` files are read with ``weights_only=True``.
    ``use_ema`` takes ``ema_state_dict`` (written by this project's training script) instead.
    Every weight must be a dense, finite, floating-point tensor that owns its elements.
    """
    check_checkpoint_file(path)
    if path.endswith(".safetensors"):
        if use_ema:
            raise CheckpointError(
                f"--ema needs a lesson .pt holding 'ema_state_dict'; {path} is a .safetensors file, which holds "
                "one set of weights: drop --ema (or convert the EMA weights into their own .safetensors file)"
            )
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state_dict = load_file(path)
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
        return strip_prefixes(check_weights(state_dict, path)), {}
    payload = _read_payload(path)
    return _weights(payload, path, use_ema), _checkpoint_metadata(payload)


def check_checkpoint_file(path: str) -> None:
    """Refuses a path that is not a regular file before it is opened (a FIFO would block, /dev/zero never end)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CheckpointError(f"no such checkpoint file: {path}") from None
    except (OSError, ValueError) as err:  # a loop of links, a name too long, a NUL byte
        raise CheckpointError(f"cannot read the checkpoint {path}: {getattr(err, 'strerror', None) or err}") from err
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not stat.S_ISREG(mode):
        kinds = {stat.S_ISFIFO: "a named pipe", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
        kind = next((name for test, name in kinds.items() if test(mode)), "a socket or other special file")
        raise CheckpointError(f"{path} is {kind}, not a checkpoint file: name a regular .pt or .safetensors file")


def describe_key(key) -> str:
    """A name from a file, as messages may quote it: a string cut to a bounded length; anything else by its type.

    Never ``repr``: a crafted key (a tuple nested in itself 26 times) has a repr of gigabytes.
    """
    if not isinstance(key, str):
        return f"<a key of type {type(key).__name__}>"
    return key if len(key) <= 200 else f"{key[:160]}... ({len(key)} characters)"


def read_training_state(path: str) -> dict:
    """What resuming needs from a checkpoint of our training script, its weights checked as the converter's.

    ``{"model": weights, "ema": EMA weights or None, "optimizer": its state dict, "step": int}``,
    weight names without the ``_unet.`` prefix.
    """
    check_checkpoint_file(path)
    if path.endswith(".safetensors"):
        read_checkpoint(path)  # says what is wrong with a missing file or a folder
        payload = {}
    else:
        payload = _read_payload(path)
    step = _checkpoint_metadata(payload).get("step")
    if "model_state_dict" not in payload or not isinstance(payload.get("optimizer_state_dict"), dict) or step is None:
        raise CheckpointError(
            f"{path} is not a checkpoint of this project's training script (it needs 'model_state_dict', "
            "'optimizer_state_dict' and 'step'): it cannot be resumed; start from its weights with --init_weights"
        )
    return {
        "model": _weights(payload, path, use_ema=False),
        "ema": _weights(payload, path, use_ema=True) if "ema_state_dict" in payload else None,
        "optimizer": payload["optimizer_state_dict"],
        "step": step,
    }


def _weights(payload: dict, path: str, use_ema: bool) -> Dict[str, torch.Tensor]:
    """The checked weights (prefixes stripped) of a lesson checkpoint's dict, or of a bare state dict."""
    key = "ema_state_dict" if use_ema else "model_state_dict"
    if use_ema and key not in payload:
        raise CheckpointError(f"{path} has no 'ema_state_dict' (it was trained without an EMA): drop --ema")
    state_dict = payload.get(key, payload)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        found = [f"'{describe_key(k)}'" if isinstance(k, str) else describe_key(k) for k in list(payload)[:8]]
        where = f"its '{key}'" if key in payload else "the file"
        raise CheckpointError(
            f"{path}: expected a Lesson 5e checkpoint (a dict whose '{key}' maps names to tensors) or a bare "
            f"state dict of tensors, but {where} is not one (top-level keys: {', '.join(found) or 'none'})"
        )
    return strip_prefixes(check_weights(state_dict, path))


def _read_payload(path: str):
    """The object a ``.pt`` file holds, read without executing code; a dict, else a CheckpointError."""
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a PyTorch checkpoint")
    _check_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError) as err:
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint: {_load_error_detail(err)}") from err
    except Exception as err:  # the weights-only unpickler refuses code: say so plainly
        if "GLOBAL" in str(err):  # a class or function to import: code, not a corrupt file
            raise CheckpointError(
                f"{path} holds pickled objects beyond tensors; refusing to load it (weights_only=True). "
                "Re-save it as a plain state dict or safetensors from code you trust."
            ) from err
        raise CheckpointError(f"{path} could not be read as a checkpoint: {_load_error_detail(err)}") from err
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a state dict or a lesson checkpoint")
    return payload


def _check_archive(path: str, max_expansion: int = 20) -> None:
    """Refuses a zip whose compressed entries would expand far beyond the file (torch.save never compresses)."""
    if not zipfile.is_zipfile(path):
        return  # a legacy or corrupt file: torch.load says which
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        return
    expanded = sum(entry.file_size for entry in entries if entry.compress_type != zipfile.ZIP_STORED)
    if expanded > max_expansion * max(os.path.getsize(path), 2**20):
        raise CheckpointError(
            f"{path} is a compressed archive that would expand to {expanded / 2**30:.1f} GiB; "
            "torch.save writes checkpoints uncompressed: refusing to load it"
        )


def _load_error_detail(err: Exception) -> str:
    """torch's own message, minus its advice to retry with ``weights_only=False`` (the unsafe path)."""
    message = str(err)
    if "WeightsUnpickler error:" in message:
        message = message.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    detail = lines[0] if lines else ""
    if "weights_only" in detail or "safe_globals" in detail:
        detail = detail.split(". ")[0]
    if not detail or "weights_only" in detail or "safe_globals" in detail:
        detail = type(err).__name__
    return detail


def check_weights(state_dict: dict, path: str) -> dict:
    """Refuses what would load but sample garbage: odd keys; sparse, meta, integer or non-finite tensors."""
    problems = []
    odd_keys = [k for k in state_dict if not isinstance(k, str)]
    if odd_keys:
        raise CheckpointError(f"{path}: weight names must be strings, not {_some(odd_keys)}")
    long_keys = [k for k in state_dict if len(k) > MAX_KEY_CHARS]
    if long_keys:
        raise CheckpointError(
            f"{path}: weight names of more than {MAX_KEY_CHARS} characters, which no Lesson 5e network has "
            f"{_some(long_keys)}"
        )
    not_dense = [k for k, v in state_dict.items() if v.layout != torch.strided or v.is_meta]
    if not_dense:
        problems.append(f"sparse or meta (data-less) tensors {_some(not_dense)}")
    state_dict = {k: v for k, v in state_dict.items() if k not in not_dense}
    # A stride-0 view claims many elements over a tiny storage: it would make us allocate a huge network.
    views = [k for k, v in state_dict.items() if v.untyped_storage().nbytes() < v.numel() * v.element_size()]
    if views:
        problems.append(f"tensors backed by less data than their shape claims {_some(views)}")
    not_float = [f"{k} ({v.dtype})" for k, v in state_dict.items() if not v.is_floating_point()]
    if not_float:
        problems.append(f"non-floating-point weights {_some(not_float)}")
    # Refused by name before any numeric check: torch has no isfinite for some of these types.
    unused = [
        f"{k} ({v.dtype})" for k, v in state_dict.items() if v.is_floating_point() and v.dtype not in WEIGHT_DTYPES
    ]
    if unused:
        accepted = ", ".join(str(dtype).replace("torch.", "") for dtype in WEIGHT_DTYPES)
        problems.append(f"weights of a type Lesson 5e never used {_some(unused)} (accepted: {accepted})")
    if not problems:
        not_finite = [k for k, v in state_dict.items() if not torch.isfinite(v).all()]
        if not_finite:
            problems.append(f"NaN or infinite values in {_some(not_finite)}")
    if problems:
        raise CheckpointError(f"{path} holds unusable weights: " + "; ".join(problems))
    return state_dict


def _some(names, limit: int = 5) -> str:
    shown = ", ".join(describe_key(name) for name in names[:limit])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > limit else ''}]"


def _checkpoint_metadata(payload: dict) -> dict:
    """``step`` (a non-negative int) and ``loss`` (a finite float) when the file has them so; else left out."""
    meta = {}
    step, loss = payload.get("step"), payload.get("loss")
    if isinstance(step, torch.Tensor) and step.numel() == 1 and not step.is_floating_point():
        step = int(step)
    if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
        meta["step"] = step
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and not loss.is_complex():
        loss = float(loss)
    if isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss):
        meta["loss"] = float(loss)
    return meta


def strip_prefixes(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    stripped = {}
    for key, value in state_dict.items():
        start = 0  # one slice at the end: cutting each prefix off in turn copies the key once per prefix
        while key.startswith(WRAPPER_PREFIXES, start):
            start = key.index(".", start) + 1
        stripped[key[start:]] = value
    return stripped


def infer_unet_config(state_dict: Dict[str, torch.Tensor]) -> dict:
    """Widths, channels and context dimension, read off the weights."""
    required = {
        "initial_convolution.weight": 4,
        "final_projection.2.weight": 4,
        "middle.1.proj_in.weight": 4,
        "middle.1.transformer_blocks.0.attn2.to_k.weight": 2,
    }
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise CheckpointError(f"not a Lesson 5e network: missing {missing} (found e.g. {_some(list(state_dict), 3)})")
    wrong_rank = [
        f"{k} has {state_dict[k].dim()} dimensions, expected {n}"
        for k, n in required.items()
        if state_dict[k].dim() != n
    ]
    if wrong_rank:
        raise CheckpointError(f"not a Lesson 5e network: {'; '.join(wrong_rank)}")
    conv_in = state_dict["initial_convolution.weight"]
    return dict(
        in_channels=conv_in.shape[1],
        base_channels=conv_in.shape[0],
        out_channels=state_dict["final_projection.2.weight"].shape[0],
        transformer_inner_dim=state_dict["middle.1.proj_in.weight"].shape[0],
        cross_attention_dim=state_dict["middle.1.transformer_blocks.0.attn2.to_k.weight"].shape[1],
    )


def check_unet_config(config: dict) -> None:
    """Refuses inferred configurations the lesson's sampler cannot use, before any memory is allocated."""
    if config["in_channels"] not in (1, 3):
        raise CheckpointError(f"the network has {config['in_channels']} image channels; Lesson 5e images have 1 or 3")
    if config["out_channels"] != config["in_channels"]:
        raise CheckpointError(
            f"the network predicts {config['out_channels']} channels from {config['in_channels']}: an epsilon "
            "predictor must output as many channels as it reads"
        )
    if config["base_channels"] % 32:
        raise CheckpointError(
            f"the network's base width {config['base_channels']} is not a multiple of 32 (its GroupNorms use 32 groups)"
        )
    too_wide = [f"{name} {config[name]} (at most {cap})" for name, cap in MAX_WIDTHS.items() if config[name] > cap]
    if too_wide:
        raise CheckpointError(f"the network's widths are implausibly large for Lesson 5e: {', '.join(too_wide)}")


def rename_key(lesson_key: str) -> Optional[str]:
    """The diffusers name of a lesson key, or None when no rule matches."""
    for pattern, replacement in _MODULE_RENAMES:
        key, count = re.subn(pattern, replacement, lesson_key)
        if count:
            for leaf_pattern, leaf_replacement in _LEAF_RENAMES:
                key = re.sub(leaf_pattern, leaf_replacement, key)
            return key
    return None


def convert_state_dict(
    state_dict: Dict[str, torch.Tensor], target_keys_and_shapes: Dict[str, torch.Size]
) -> Dict[str, torch.Tensor]:
    """Renames and reshapes lesson weights into the target's keys; raises on any mismatch."""
    converted, unknown, bad_shapes = {}, [], []
    for lesson_key, tensor in state_dict.items():
        key = rename_key(lesson_key)
        if key is None:
            unknown.append(lesson_key)
            continue
        if key not in target_keys_and_shapes:
            if ".conv_shortcut." in key:  # the residual_proj of an equal-width block: never used
                continue
            unknown.append(lesson_key)
            continue
        if key.endswith("conv_shortcut.weight") and tensor.dim() == 2:
            tensor = tensor[:, :, None, None]  # the lesson's per-pixel Linear is a 1x1 conv
        if tuple(tensor.shape) != tuple(target_keys_and_shapes[key]):
            bad_shapes.append(f"{lesson_key}: {tuple(tensor.shape)}, expected {tuple(target_keys_and_shapes[key])}")
            continue
        converted[key] = tensor
    missing = sorted(set(target_keys_and_shapes) - set(converted))
    problems = []
    if unknown:
        problems.append(f"unknown keys {_some(sorted(unknown), 10)}")
    if bad_shapes:
        problems.append(f"wrong shapes {_some(bad_shapes, 10)}")
    if missing:
        problems.append(f"missing weights for {_some(missing, 10)}")
    if problems:
        raise CheckpointError("the checkpoint does not match the Lesson 5e network: " + "; ".join(problems))
    return converted


def unet_from_lesson_state_dict(state_dict: Dict[str, torch.Tensor]) -> MNISTUNet2DConditionModel:
    """Builds the diffusers UNet that holds exactly these lesson weights (float32).

    The configuration read off the weights is checked against every tensor of the file on the
    meta device (shapes only) before the real network is allocated.
    """
    config = infer_unet_config(state_dict)
    check_unet_config(config)
    with torch.device("meta"):
        target = {k: v.shape for k, v in MNISTUNet2DConditionModel(**config).state_dict().items()}
    converted = convert_state_dict(state_dict, target)
    unet = MNISTUNet2DConditionModel(**config)
    unet.load_state_dict(converted, strict=True)
    return unet.float().eval()
