#!/usr/bin/env bash
# Recipe of saved_models/bnn_cnn_deterministic: the exact command (run from the repo root) that
# trained it. Protocol: first 55,000 training images, best epoch by accuracy on the
# last 5,000, test split scored once. Adam with cosine decay, batch 100, seed 0.
# Trained with two intra-op threads (TF_NUM_INTRAOP_THREADS=2); other thread counts
# change float rounding, so a rerun matches to within noise.
set -euo pipefail
python -m kbnn.train bnn_cnn --filters 48 96 192 --dense-units 256 --binarization deterministic --epochs 20 --flip --lr 3e-3 \
    --data-dir "${KBNN_DATA_DIR:-../shared/data/fashion_mnist}" --out saved_models/bnn_cnn_deterministic "$@"
