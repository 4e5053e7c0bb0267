"""The layout holds: the product never imports the tools, and the remote-code files stay self-contained."""

import ast
import os
import pkgutil
import sys
import sysconfig
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parents[1] / "pipeline_mnist_ddim"
# the pipeline and the modules it imports relatively, the UNet subclass, the compact text encoder
REMOTE_CODE = sorted(path.name for path in PACKAGE.glob("pipeline_*.py")) + [
    "unet_mnist.py",
    "compact_text_encoder.py",
]
PRODUCT = sorted(
    [PACKAGE / "__init__.py", *(PACKAGE / name for name in REMOTE_CODE)]
    + list((PACKAGE / "lesson").glob("*.py"))
    + list((PACKAGE / "conversion").glob("*.py")),
)


def standard_library_modules() -> frozenset:
    """``sys.stdlib_module_names`` (Python >= 3.10); on 3.9, which setup.cfg still supports, the built-in modules
    and those in the standard library's folder (the same names but for a few platform-specific ones)."""
    if hasattr(sys, "stdlib_module_names"):
        return sys.stdlib_module_names
    stdlib = sysconfig.get_paths()["stdlib"]
    found = pkgutil.iter_modules([stdlib, os.path.join(stdlib, "lib-dynload")])
    return frozenset(sys.builtin_module_names) | {module.name for module in found}


def imported_modules(path: Path, package: str) -> set:
    """Every module ``path`` imports, anywhere in the file, with relative imports made absolute."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module)
    return names


def package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1])


@pytest.mark.parametrize("path", PRODUCT, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_the_product_never_imports_the_tools(path):
    tools = {name for name in imported_modules(path, package_of(path)) if name.startswith("pipeline_mnist_ddim.tools")}
    assert not tools, f"{path.name} imports {sorted(tools)}"


@pytest.mark.parametrize("name", REMOTE_CODE)
def test_remote_code_imports_only_torch_diffusers_transformers_and_its_siblings(name):
    allowed_roots = {"torch", "diffusers", "transformers", "huggingface_hub", "safetensors"}
    imported = imported_modules(PACKAGE / name, "pipeline_mnist_ddim")
    outside = {
        module
        for module in imported
        if module.split(".")[0] not in allowed_roots
        and module.split(".")[0] not in standard_library_modules()
        and not (module.startswith("pipeline_mnist_ddim.") and module.count(".") == 1)  # a sibling remote-code file
    }
    assert not outside, f"{name} imports {sorted(outside)}"
    siblings = {module.split(".")[1] + ".py" for module in imported if module.startswith("pipeline_mnist_ddim.")}
    assert siblings <= set(REMOTE_CODE), f"{name} imports package modules that are not remote code: {siblings}"
