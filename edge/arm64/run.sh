#!/usr/bin/env bash
# Run a .tflite file with the stock aarch64 LiteRT on an emulated Cortex-A53.
#
#   edge/arm64/prepare.sh                                   # once: builds the cached sysroot
#   edge/arm64/run.sh MODEL.tflite INPUTS.npy OUTPUTS.npy [--delegate LIBDELEGATE.so]
#   edge/arm64/run.sh --check                               # is the environment usable?
#
# INPUTS.npy: float32, batched on axis 0; OUTPUTS.npy gets the model's first output for
# every row (float32), written only if the whole run succeeds. --delegate loads an
# aarch64 LiteRT delegate (e.g. kbnn's) into the interpreter. Exit status 0 on success.
# The CPU is emulated by qemu: outputs are those of an ARM64 CPU, timings mean nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${KBNN_ARM64_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kbnn/arm64}
sysroot=$dir/sysroot
cpu=${KBNN_ARM64_CPU:-cortex-a53}

if ! command -v qemu-aarch64-static >/dev/null; then
  echo "run.sh: qemu-aarch64-static not found; run edge/arm64/prepare.sh" \
       "(or apt-get install qemu-user-static)" >&2
  exit 2
fi
if [ ! -f "$dir/ready" ] || [ ! -x "$sysroot/usr/bin/python3.11" ]; then
  echo "run.sh: no prepared ARM64 environment in $dir; run edge/arm64/prepare.sh" >&2
  exit 2
fi

# A clean environment: nothing of the host's Python may leak into the arm64 one. Paths
# given on the command line are host paths; qemu -L only redirects what is absent on the
# host to the sysroot, so they work as they are.
exec env -i PATH=/usr/bin:/bin HOME="${HOME:-/tmp}" LANG=C.UTF-8 \
  PYTHONPATH="$sysroot/site" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 \
  TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" \
  qemu-aarch64-static -cpu "$cpu" -L "$sysroot" "$sysroot/usr/bin/python3.11" \
  "$here/run_model.py" "$@"
