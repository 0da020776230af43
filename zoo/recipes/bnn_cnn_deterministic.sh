#!/usr/bin/env bash
# Recipe of saved_models/bnn_cnn_deterministic: the exact commands (run from the repo root)
# that trained it, in two cycles. Protocol: first 55,000 training images, best epoch by
# accuracy on the last 5,000, test split scored once. Adam with cosine decay, batch 100.
# Trained with one intra-op thread per process (TF_NUM_INTRAOP_THREADS=1); other
# thread counts change float rounding, so a rerun matches to within noise.
# Needs saved_models/float_cnn.keras (zoo/recipes/float_cnn.sh) as the teacher.
set -euo pipefail
data="${KBNN_DATA_DIR:-../shared/data/fashion_mnist}"
# Cycle 1: 30 epochs from scratch with random flips, seed 0 (val 92.38%, test 92.42%).
python -m kbnn.train bnn_cnn --filters 32 64 128 --dense-units 256 --binarization deterministic --epochs 30 --flip \
    --data-dir "$data" --out saved_models/bnn_cnn_deterministic "$@"
# Cycle 2: 15 more epochs from cycle 1's weights at peak learning rate 1e-3, distilled from float_cnn.
python -m kbnn.train bnn_cnn --filters 32 64 128 --dense-units 256 --binarization deterministic --epochs 15 --flip \
    --init saved_models/bnn_cnn_deterministic.keras --teacher saved_models/float_cnn.keras --alpha 0.5 --temperature 2 \
    --lr 1e-3 --seed 1 --data-dir "$data" --out saved_models/bnn_cnn_deterministic "$@"
