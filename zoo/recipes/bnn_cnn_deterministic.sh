#!/usr/bin/env bash
# Recipe of saved_models/bnn_cnn_deterministic: the exact command (run from the repo root) that
# trained it. Protocol: first 55,000 training images, best epoch by accuracy on the
# last 5,000, test split scored once. Adam with cosine decay, batch 100, seed 0.
# Trained with one intra-op thread per process (TF_NUM_INTRAOP_THREADS=1); other
# thread counts change float rounding, so a rerun matches to within noise.
set -euo pipefail
python -m kbnn.train bnn_cnn --filters 32 64 128 --dense-units 256 --binarization deterministic --epochs 30 --flip \
    --data-dir "${KBNN_DATA_DIR:-../shared/data/fashion_mnist}" --out saved_models/bnn_cnn_deterministic "$@"
