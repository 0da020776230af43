#!/bin/sh
# Cross-compile kbnn's LiteRT delegate for aarch64 Linux (arm64 Android-class CPUs use the
# same code: NEON kernels, selected at run time like the x86 ones).
#
#   kbnn/runtime/build_aarch64.sh [OUTPUT.so]     (default build/aarch64/libkbnn_delegate.so)
#
# Needs Debian's gcc-aarch64-linux-gnu (apt-get install gcc-aarch64-linux-gnu), or
# CC=... naming another aarch64 C compiler. Load the result in the aarch64 ai-edge-litert
# wheel with KBNN_DELEGATE_LIBRARY=OUTPUT.so (kbnn.runtime.load_delegate) or with
# ai_edge_litert.interpreter.load_delegate(OUTPUT.so); edge/arm64/run.sh runs it under qemu.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/aarch64/libkbnn_delegate.so}
cc=${CC:-aarch64-linux-gnu-gcc}
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "build_aarch64.sh: no $cc; install it with: apt-get install gcc-aarch64-linux-gnu" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp-$$"
trap 'rm -f "$tmp"' EXIT
"$cc" -std=c11 -O2 -ffp-contract=off -fPIC -shared -Wall -Wextra \
  -o "$tmp" "$here/csrc/delegate.c" "$here/csrc/bitkernels.c" "$here/csrc/bitconv.c" "$here/csrc/threadpool.c" "$here/csrc/shapeeval.c" -lpthread
mv "$tmp" "$out"
trap - EXIT
echo "$out"
