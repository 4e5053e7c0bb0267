"""The code is formatted and linted with ruff, as configured in pyproject.toml (diffusers' settings).

Fix a failure with `ruff check --fix . && ruff format .` (ruff is pinned in the `test` extra,
since formatting changes between ruff versions).
"""

import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def ruff(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments, "--no-cache", str(REPO)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_code_passes_the_linter():
    result = ruff("check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_formatted():
    result = ruff("format", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
