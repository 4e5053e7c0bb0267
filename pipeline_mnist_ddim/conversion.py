"""Lesson 5e checkpoint -> `MNistUNet2DConditionModel` weights, with strict key accounting.

Reading never executes pickled code (``torch.load(weights_only=True)``). Every lesson
key is renamed to a diffusers key or is a known-unused one (the ``residual_proj`` of
equal-width res blocks, which the lesson creates but never applies); anything else,
a missing key or a wrong shape is a :class:`CheckpointError` naming the keys.
"""

import os
import re
import zipfile
from typing import Dict, Optional, Tuple

import torch

from .unet_mnist import MNistUNet2DConditionModel

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


class CheckpointError(ValueError):
    """The file is not a usable Lesson 5e checkpoint."""


def read_checkpoint(path: str, use_ema: bool = False) -> Tuple[Dict[str, torch.Tensor], dict]:
    """The network weights (prefixes stripped) and metadata (``step``, ``loss``) of a lesson file.

    Accepts the lesson's ``.pt`` (``{"step", "model_state_dict", ...}``), a bare state dict
    ``.pt`` and ``.safetensors``. ``.pt`` files are read with ``weights_only=True``.
    ``use_ema`` takes ``ema_state_dict`` (written by this project's training script) instead.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"no such checkpoint file: {path}")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return strip_prefixes(load_file(path)), {}
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError) as err:
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint: {err}") from err
    except Exception as err:  # the weights-only unpickler refuses code: say so plainly
        if "GLOBAL" in str(err):  # a class or function to import: code, not a corrupt file
            raise CheckpointError(
                f"{path} holds pickled objects beyond tensors; refusing to load it (weights_only=True). "
                "Re-save it as a plain state dict or safetensors from code you trust."
            ) from err
        raise CheckpointError(f"{path} could not be read as a checkpoint: {err}") from err
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a state dict or a lesson checkpoint")
    key = "ema_state_dict" if use_ema else "model_state_dict"
    if use_ema and key not in payload:
        raise CheckpointError(f"{path} has no 'ema_state_dict' (it was trained without an EMA): drop --ema")
    state_dict = payload.get(key, payload)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: '{key}' is not a mapping of tensors")
    meta = {k: payload[k] for k in ("step", "loss") if k in payload}
    if "loss" in meta and isinstance(meta["loss"], torch.Tensor):
        meta["loss"] = float(meta["loss"])
    return strip_prefixes(state_dict), meta


def strip_prefixes(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    stripped = {}
    for key, value in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        stripped[key] = value
    return stripped


def infer_unet_config(state_dict: Dict[str, torch.Tensor]) -> dict:
    """Widths, channels and context dimension, read off the weights."""
    required = ("initial_convolution.weight", "final_projection.2.weight", "middle.1.proj_in.weight",
                "middle.1.transformer_blocks.0.attn2.to_k.weight")  # fmt: skip
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise CheckpointError(f"not a Lesson 5e network: missing {missing} (found e.g. {list(state_dict)[:3]})")
    conv_in = state_dict["initial_convolution.weight"]
    return dict(
        in_channels=conv_in.shape[1],
        base_channels=conv_in.shape[0],
        out_channels=state_dict["final_projection.2.weight"].shape[0],
        transformer_inner_dim=state_dict["middle.1.proj_in.weight"].shape[0],
        cross_attention_dim=state_dict["middle.1.transformer_blocks.0.attn2.to_k.weight"].shape[1],
    )


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
        problems.append(f"unknown keys {sorted(unknown)}")
    if bad_shapes:
        problems.append(f"wrong shapes {bad_shapes}")
    if missing:
        problems.append(f"missing weights for {missing}")
    if problems:
        raise CheckpointError("the checkpoint does not match the Lesson 5e network: " + "; ".join(problems))
    return converted


def unet_from_lesson_state_dict(state_dict: Dict[str, torch.Tensor]) -> MNistUNet2DConditionModel:
    """Builds the diffusers UNet that holds exactly these lesson weights (float32)."""
    unet = MNistUNet2DConditionModel(**infer_unet_config(state_dict))
    target = {k: v.shape for k, v in unet.state_dict().items()}
    unet.load_state_dict(convert_state_dict(state_dict, target), strict=True)
    return unet.float().eval()
