"""Keep the embedded default's remote-code files verbatim copies of the package's modules.

    python scripts/sync_remote_code.py           # copy every stale file
    python scripts/sync_remote_code.py --check   # exit 1 and list them instead (CI: tests/test_default_pipeline.py)

A pipeline folder loaded with ``trust_remote_code=True`` runs the code files inside it, so the
embedded default carries copies of the pipeline (with the modules it imports relatively) and UNet modules. As diffusers' ``make fix-copies``,
this rewrites only those files; the weights and configs are left alone.
"""

import argparse
import os
import shutil
import sys
from typing import Dict, List

from diffusers.utils.dynamic_modules_utils import get_relative_import_files


REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "pipeline_mnist_ddim"
DEFAULT = f"{PACKAGE}/default_pipeline"


def _remote_code_copies() -> Dict[str, str]:
    """copy -> the package module it must equal byte for byte (paths relative to the repository).

    The pipeline file and every file it imports relatively (diffusers' own rule for what a folder's code
    needs, so a new sibling module is copied without editing this list), and the UNet's file in ``unet/``.
    """
    pipeline = os.path.join(REPO_DIR, PACKAGE, "pipeline_mnist_ddim.py")
    modules = [pipeline] + sorted(get_relative_import_files(pipeline))
    copies = {f"{DEFAULT}/{os.path.basename(path)}": f"{PACKAGE}/{os.path.basename(path)}" for path in modules}
    copies[f"{DEFAULT}/unet/unet_mnist.py"] = f"{PACKAGE}/unet_mnist.py"
    return copies


REMOTE_CODE_COPIES = _remote_code_copies()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def stale_copies(repo_dir: str = REPO_DIR) -> List[str]:
    """The copies (relative paths) that differ from their module or are missing."""
    stale = []
    for copy, module in REMOTE_CODE_COPIES.items():
        copy_path = os.path.join(repo_dir, copy)
        if not os.path.isfile(copy_path) or _read(copy_path) != _read(os.path.join(repo_dir, module)):
            stale.append(copy)
    return stale


def sync(repo_dir: str = REPO_DIR) -> List[str]:
    """Copies every stale file over (atomically: a reader never sees half a file); returns them."""
    stale = stale_copies(repo_dir)
    for copy in stale:
        target = os.path.join(repo_dir, copy)
        staging = target + ".sync-tmp"
        shutil.copyfile(os.path.join(repo_dir, REMOTE_CODE_COPIES[copy]), staging)
        os.replace(staging, target)
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="list stale copies and exit 1 instead of fixing them")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_copies()
        for copy in stale:
            print(f"stale: {copy} differs from {REMOTE_CODE_COPIES[copy]} (run python scripts/sync_remote_code.py)")
        return 1 if stale else 0
    for copy in sync():
        print(f"updated {copy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
