#!/usr/bin/env bash
# Recipe of saved_models/bnn_mlp_1024_deterministic: the exact command (run from the repo root) that
# trained it. Protocol: first 55,000 training images, best epoch by accuracy on the
# last 5,000, test split scored once. Adam with cosine decay, batch 100, seed 1.
# Trained with one intra-op thread per process (TF_NUM_INTRAOP_THREADS=1); other
# thread counts change float rounding, so a rerun matches to within noise.
# Needs saved_models/float_cnn.keras (zoo/recipes/float_cnn.sh) as the teacher.
set -euo pipefail
python -m kbnn.train bnn_mlp --hidden 1024 --binarization deterministic --epochs 80 --input-dropout 0 --dropout 0.1 --teacher saved_models/float_cnn.keras --alpha 0.5 --temperature 2 --seed 1 \
    --data-dir "${KBNN_DATA_DIR:-../shared/data/fashion_mnist}" --out saved_models/bnn_mlp_1024_deterministic "$@"
