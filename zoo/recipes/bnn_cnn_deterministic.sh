#!/usr/bin/env bash
# Recipe of saved_models/bnn_cnn_deterministic: the exact commands (run from the repo root) that
# trained it, 3 cycles of the cosine schedule, each starting from the previous one's
# kept model; cycles after the first distill from the released float_cnn.
# Protocol: first 55,000 training images, best epoch by accuracy on the last 5,000,
# test split scored once (for the released model). Adam with cosine decay, batch 100.
# Trained with two intra-op threads (TF_NUM_INTRAOP_THREADS=2); other thread counts
# change float rounding, so a rerun matches to within noise.
set -euo pipefail
data="${KBNN_DATA_DIR:-../shared/data/fashion_mnist}"
work="${KBNN_WORK_DIR:-runs}"
mkdir -p "$work"
python -m kbnn.train bnn_cnn --filters 48 96 192 --dense-units 256 --binarization deterministic --flip --epochs 20 --lr 3e-3 \
    --data-dir "$data" --out "$work/bnn_cnn_cycle1" "$@"
python -m kbnn.train bnn_cnn --filters 48 96 192 --dense-units 256 --binarization deterministic --flip --epochs 15 --lr 1e-3 --seed 1 --teacher saved_models/float_cnn.keras --alpha 0.5 --temperature 2 --init "$work/bnn_cnn_cycle1.keras" \
    --data-dir "$data" --out "$work/bnn_cnn_cycle2" "$@"
python -m kbnn.train bnn_cnn --filters 48 96 192 --dense-units 256 --binarization deterministic --flip --epochs 12 --lr 5e-4 --seed 2 --teacher saved_models/float_cnn.keras --alpha 0.5 --temperature 2 --init "$work/bnn_cnn_cycle2.keras" \
    --data-dir "$data" --out saved_models/bnn_cnn_deterministic "$@"
