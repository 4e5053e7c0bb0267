"""Where and in what precision a model runs: one device choice and one dtype table for every command."""

import torch

from pipeline_mnist_ddim.tools.arguments import DTYPE_NAMES


DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


def pick_device(name: str = "auto") -> torch.device:
    """The device asked for ("auto": CUDA, else MPS, else CPU); a ValueError when it is not a device or not here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"--device {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not mps_available():
        raise ValueError(f"--device {name}: MPS is not available here; use cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name!r}: models run on cpu, cuda or mps")
    return device


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype named ``name`` (a key of ``DTYPES``); a ValueError naming the accepted ones otherwise."""
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, not {name!r}")
    return DTYPES[name]


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (Intel AMX or AVX512-BF16)."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.10
    if get_capabilities is not None:
        capabilities = get_capabilities()
        return bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def resolve_dtype(name: str, device: torch.device) -> str:
    """``auto`` is bfloat16 weights (latents stay float32) on a CPU with native bf16, float32 elsewhere.

    On such a CPU bf16 weights halve the main job's time (docs/speed.md); without native bf16 it
    is emulated and slower, and GPUs keep float32 until measured.
    """
    if name != "auto":
        return name
    return "bfloat16" if device.type == "cpu" and cpu_has_native_bf16() else "float32"
