#!/usr/bin/env bash
# Recipe of saved_models/bnn_cnn_shortcuts_deterministic: the exact commands (run from the repo root) that
# trained it: bnn_cnn with Bi-Real shortcuts, 4 cycles of the cosine schedule, each
# starting from the previous one's kept model, all distilled from the released float_cnn.
# Protocol: first 55,000 training images, best epoch by accuracy on the last 5,000,
# test split scored once (for the released model). Adam with cosine decay, batch 100.
# Trained with two intra-op threads (TF_NUM_INTRAOP_THREADS=2); other thread counts
# change float rounding, so a rerun matches to within noise.
set -euo pipefail
data="${KBNN_DATA_DIR:-../shared/data/fashion_mnist}"
work="${KBNN_WORK_DIR:-runs}"
mkdir -p "$work"
python -m kbnn.train bnn_cnn --filters 48 96 192 --dense-units 256 --binarization deterministic --shortcuts --flip --epochs 16 --lr 3e-3 --seed 5 --teacher saved_models/float_cnn.keras --alpha 0.5 --temperature 2 \
    --data-dir "$data" --out "$work/bnn_cnn_shortcuts_cycle1" "$@"
python -m kbnn.train bnn_cnn --filters 48 96 192 --dense-units 256 --binarization deterministic --shortcuts --flip --epochs 12 --lr 1e-3 --seed 6 --teacher saved_models/float_cnn.keras --alpha 0.5 --temperature 2 --init "$work/bnn_cnn_shortcuts_cycle1.keras" \
    --data-dir "$data" --out "$work/bnn_cnn_shortcuts_cycle2" "$@"
python -m kbnn.train bnn_cnn --filters 48 96 192 --dense-units 256 --binarization deterministic --shortcuts --flip --epochs 10 --lr 5e-4 --seed 7 --teacher saved_models/float_cnn.keras --alpha 0.5 --temperature 2 --init "$work/bnn_cnn_shortcuts_cycle2.keras" \
    --data-dir "$data" --out "$work/bnn_cnn_shortcuts_cycle3" "$@"
python -m kbnn.train bnn_cnn --filters 48 96 192 --dense-units 256 --binarization deterministic --shortcuts --flip --epochs 6 --lr 3e-4 --seed 8 --teacher saved_models/float_cnn.keras --alpha 0.5 --temperature 2 --init "$work/bnn_cnn_shortcuts_cycle3.keras" \
    --data-dir "$data" --out saved_models/bnn_cnn_shortcuts_deterministic "$@"
