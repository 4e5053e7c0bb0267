#!/usr/bin/env bash
# The lowest diffusers and transformers that setup.cfg declares, checked in a venv of their own
# (the rest of install_requires as declared, torch 2.13.0, this package NOT installed there):
# a folder written by the package and the embedded default load alone and give the main
# environment's tokenizer ids, text-encoder outputs and images; what the lowest env re-saves
# loads back in the main env. Needs pip access to PyPI (no Hub access).
#   bash scripts/check_lowest_versions.sh [DEFAULT_PIPELINE_DIR]
# The venv is kept for the next run in $LOWEST_VERSIONS_VENV (default: /tmp/mnist-ddim-lowest-versions).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LOWEST_VERSIONS_VENV:-${TMPDIR:-/tmp}/mnist-ddim-lowest-versions}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 HF_MODULES_CACHE="$work/modules" PYTHONWARNINGS=ignore

mapfile -t requirements < <(python tests/lowest_versions_check.py requirements)
[ -x "$venv/bin/python" ] || python -m venv "$venv"
"$venv/bin/python" -m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu  # the CPU build
"$venv/bin/python" -m pip install -q "${requirements[@]}"
echo "lowest versions: $("$venv/bin/python" -m pip freeze | grep -iE '^(diffusers|transformers|tokenizers|huggingface.hub|accelerate|safetensors|pillow|torch|jinja2)==' | tr '\n' ' ')"

python tests/lowest_versions_check.py write "$work" "$@"
"$venv/bin/python" tests/lowest_versions_check.py check "$work"
python tests/lowest_versions_check.py check-resaved "$work"
