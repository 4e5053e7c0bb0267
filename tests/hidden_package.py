"""The opening of every script that must run where this package cannot be imported.

The package is installed (editable) in the test environment, so an import hook hides it; a
folder or Hub repository loaded after this must carry all its own code.
"""

import os
import subprocess
import sys
from pathlib import Path


HIDE_PACKAGE = r"""
import importlib.abc, sys

class HidePackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pipeline_mnist_ddim" or name.startswith("pipeline_mnist_ddim."):
            raise ImportError(f"{name} is hidden: the folder must load from its own code")
        return None

sys.meta_path.insert(0, HidePackage())
try:
    import pipeline_mnist_ddim
except ImportError:
    pass
else:
    sys.exit("the package is still importable: the check would prove nothing")
"""


def run_without_package(script: str, *args: str, work: Path, modules_cache: Path) -> str:
    """Runs ``script`` (opening with ``HIDE_PACKAGE``) in a fresh offline Python with ``args``; returns its stdout.

    One thread, as in the test process (see conftest.one_thread); remote code goes to ``modules_cache``.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(modules_cache), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
