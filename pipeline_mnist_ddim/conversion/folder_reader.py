"""A pipeline folder's files read within bounds, without torch and without running or loading anything.

`FolderReader` parses a folder's JSON files and safetensors headers under size limits and compiles (never runs)
its code; `folder_checks` judges what they hold.
"""

import json
import math
import os
import struct
from typing import Any, Dict, List, Optional


MAX_CONFIG_BYTES = 1024 * 1024  # a scheduler config holds 1000 betas: about 25 kB
MAX_CODE_BYTES = 1024 * 1024
MAX_SAFETENSORS_HEADER = 100 * 1000 * 1000  # the safetensors format's own limit
WEIGHT_DTYPES = ("F32", "F16", "BF16")  # what the lesson and this package ever store
# transformers' name, then diffusers' (the compact text encoder is a diffusers ModelMixin)
WEIGHT_FILES = {
    "unet": ("diffusion_pytorch_model.safetensors",),
    "text_encoder": ("model.safetensors", "diffusion_pytorch_model.safetensors"),
}


class PipelineFolderError(ValueError):
    """The folder is not a usable pipeline; the message names the file and the value."""


class FolderReader:
    """A pipeline folder's files read within bounds: JSON parsed, code compiled (never run), safetensors
    headers read (never the tensors). Each problem is a `PipelineFolderError` naming the file."""

    def __init__(self, folder: str):
        self.folder = folder

    def fail(self, where: str, problem: str) -> PipelineFolderError:
        # "could not be loaded as a pipeline" is the wording folders.py uses for what diffusers refuses
        return PipelineFolderError(f"{self.folder} could not be loaded as a pipeline: {where}: {problem}")

    def path(self, *parts: str) -> str:
        return os.path.join(self.folder, *parts)

    def json(self, relative: str, max_bytes: int = MAX_CONFIG_BYTES) -> Dict[str, Any]:
        path = self.path(relative)
        if not os.path.isfile(path):
            raise self.fail(relative, "missing")
        size = os.path.getsize(path)
        if size > max_bytes:
            raise self.fail(relative, f"{size} bytes, over the {max_bytes} a config of this pipeline needs")
        try:
            with open(path, "rb") as f:
                value = json.loads(f.read().decode("utf-8"))
        except RecursionError:
            raise self.fail(relative, "nested too deeply to be a config") from None
        except (ValueError, UnicodeDecodeError) as err:
            raise self.fail(relative, f"not a valid JSON file ({type(err).__name__})") from None
        if not isinstance(value, dict):
            raise self.fail(relative, f"holds a {type(value).__name__}, not a JSON object")
        return value

    def code(self, relative: str) -> None:
        """The folder's Python file must exist and compile (compiled, never run, here)."""
        path = self.path(relative)
        if not os.path.isfile(path):
            raise self.fail(relative, "missing (the pipeline's own code)")
        if os.path.getsize(path) > MAX_CODE_BYTES:
            raise self.fail(relative, f"over {MAX_CODE_BYTES} bytes: not this pipeline's code")
        try:
            with open(path, "rb") as f:
                compile(f.read(), path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as err:  # ValueError: null bytes
            line = f" (line {err.lineno})" if getattr(err, "lineno", None) else ""
            raise self.fail(relative, f"its Python code does not compile{line}: {getattr(err, 'msg', err)}") from None


def is_whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def weight_files(f: FolderReader, component: str) -> List[str]:
    names = WEIGHT_FILES[component]
    for name in names:
        if os.path.isfile(f.path(component, name)):
            return [os.path.join(component, name)]
        index_name = name.replace(".safetensors", ".safetensors.index.json")
        if os.path.isfile(f.path(component, index_name)):
            weight_map = f.json(os.path.join(component, index_name)).get("weight_map")
            shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
            if not shards or not all(isinstance(s, str) and os.path.basename(s) == s for s in shards):
                raise f.fail(os.path.join(component, index_name), "weight_map does not name shard files in its folder")
            return [os.path.join(component, s) for s in shards]
    raise f.fail(component, f"no {names[0]}: its weights are missing (only safetensors files are loaded)")


def safetensors_header(path: str, where: str = "", folder: Optional[FolderReader] = None) -> Dict[str, dict]:
    """``{name: {"dtype", "shape", "data_offsets"}}`` of a safetensors file, read without torch."""
    f = folder or FolderReader(os.path.dirname(path))
    where = where or os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as stream:
        head = stream.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 2 <= length <= min(MAX_SAFETENSORS_HEADER, size - 8):
            raise f.fail(where, "not a safetensors file (truncated or corrupt header)")
        try:
            header = json.loads(stream.read(length).decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise f.fail(where, "not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise f.fail(where, "not a safetensors file (its header is not an object)")
    header.pop("__metadata__", None)
    data = size - 8 - length
    for name, entry in header.items():
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("shape"), list)
            and isinstance(entry.get("data_offsets"), list)
        )
        if ok:
            begin, end = (entry["data_offsets"] + [None, None])[:2]
            ok = is_whole(begin, 0, data) and is_whole(end, 0, data) and begin <= end
        if not ok:
            raise f.fail(where, f"tensor {shown(name)} has a malformed header entry (truncated file?)")
        if entry.get("dtype") not in WEIGHT_DTYPES:
            raise f.fail(
                where, f"tensor {shown(name)} is {shown(entry.get('dtype'))}, not one of {', '.join(WEIGHT_DTYPES)}"
            )
    return header


def weight_header(f: FolderReader, component: str) -> Dict[str, dict]:
    header: Dict[str, dict] = {}
    for relative in weight_files(f, component):
        header.update(safetensors_header(f.path(relative), relative, f))
    if not header:
        raise f.fail(component, "its weights file holds no tensors")
    return header
