#!/usr/bin/env bash
# Rebuild the embedded default pipeline from its training checkpoint (not shipped: 36 MB)
# and the text encoder folder written beside it by scripts/train_lesson5e.py.
#   bash scripts/build_default_pipeline.sh CHECKPOINT.pt TEXT_ENCODER_DIR
# Without the checkpoint, re-write it with the current code files, text-encoder/tokenizer
# format and model card, its weights unchanged (checked tensor by tensor before replacing):
#   bash scripts/build_default_pipeline.sh --refresh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--refresh" ]; then
    exec python scripts/refresh_default_pipeline.py
fi
python convert_checkpoint.py --checkpoint "$1" --text_encoder "$2" --dtype float16 \
    --output_dir pipeline_mnist_ddim/default_pipeline --overwrite \
    --model_card_details "$(cat docs/default_model.md)"
