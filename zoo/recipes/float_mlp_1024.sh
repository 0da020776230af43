#!/usr/bin/env bash
# Recipe of saved_models/float_mlp_1024: the exact command (run from the repo root) that
# trained it. Protocol: first 55,000 training images, best epoch by accuracy on the
# last 5,000, test split scored once. Adam with cosine decay, batch 100, seed 0.
set -euo pipefail
python -m kbnn.train float_mlp --hidden 1024 --epochs 40 \
    --data-dir "${KBNN_DATA_DIR:-../shared/data/fashion_mnist}" --out saved_models/float_mlp_1024 "$@"
