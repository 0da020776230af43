#!/usr/bin/env bash
# Prepare the emulated ARM64 LiteRT environment, from the package registries only.
#
#   edge/arm64/prepare.sh            # then: edge/arm64/run.sh MODEL.tflite IN.npy OUT.npy
#
# What it makes, in $KBNN_ARM64_DIR (default ~/.cache/kbnn/arm64):
#   sysroot/                 Debian 12's arm64 Python 3.11 and its libraries, unpacked with
#                            `dpkg-deb -x` from the packages in packages.txt (nothing is
#                            installed system-wide), plus an aarch64 /proc/cpuinfo
#   sysroot/site/            the aarch64 manylinux wheels of ai-edge-litert and numpy
#                            (pip --platform manylinux_2_27_aarch64 --only-binary=:all:)
#   ready                    written last; it names what was prepared, so a changed
#                            package list or version makes the next call prepare again
# and, system-wide, Debian's qemu-user-static (apt-get) if qemu-aarch64-static is missing.
#
# Why the cpuinfo: Debian's qemu 7.2 passes the host's x86 /proc/cpuinfo through, and
# XNNPACK's CPU detection then crashes (SIGSEGV); `qemu -L SYSROOT` serves SYSROOT/proc/cpuinfo.
# Root (or sudo) is needed for apt-get only. Written for Debian 12 (bookworm), whose arm64
# Python 3.11 matches the cp311 wheels. Safe to run again: a prepared directory is reused.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${KBNN_ARM64_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kbnn/arm64}
litert_version=${KBNN_ARM64_LITERT_VERSION:-2.3.0}
numpy_version=${KBNN_ARM64_NUMPY_VERSION:-2.4.6}
python_version=3.11
host_python=${PYTHON:-python3}

stamp="litert=$litert_version numpy=$numpy_version python=$python_version $(sha256sum "$here/packages.txt" "$here/cpuinfo" | cut -c1-16 | tr '\n' ' ')"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "prepare.sh: '$*' needs root; run it as root or install sudo" >&2; exit 1
  fi
}

step() { echo "[edge/arm64] $*" >&2; }

if ! command -v qemu-aarch64-static >/dev/null; then
  step "installing qemu-user-static (apt-get)"
  as_root apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends qemu-user-static >/dev/null
fi

if [ -f "$dir/ready" ] && [ "$(cat "$dir/ready")" = "$stamp" ]; then
  step "ready (cached in $dir)"
  exit 0
fi

rm -rf "$dir"
mkdir -p "$dir"
work=$(mktemp -d "$dir/.prepare.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The arm64 package lists, without adding arm64 to dpkg's architectures for good.
arch_opts=(-o APT::Architectures::="$(dpkg --print-architecture)" -o APT::Architectures::=arm64)
step "fetching Debian's arm64 package lists (apt-get update)"
as_root apt-get "${arch_opts[@]}" -o DPkg::Lock::Timeout=300 update -qq

packages=$(grep -v '^#' "$here/packages.txt" | sed '/^$/d; s/$/:arm64/')
mkdir -p "$work/debs"
step "downloading $(echo "$packages" | wc -l) arm64 packages (apt-get download)"
# apt-get download as root warns that _apt cannot write here; the download itself works.
(cd "$work/debs" && apt-get "${arch_opts[@]}" download -qq $packages 2>&1 \
  | { grep -v "Download is performed unsandboxed" || true; } >&2) || {
  echo "prepare.sh: apt-get download failed; packages.txt names Debian 12 (bookworm)" \
       "packages, so on another release edit it to that release's names" >&2; exit 1; }

step "unpacking into the sysroot (dpkg-deb -x)"
mkdir -p "$work/sysroot"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/sysroot"; done
mkdir -p "$work/sysroot/proc"
cp "$here/cpuinfo" "$work/sysroot/proc/cpuinfo"

step "downloading the aarch64 wheels: ai-edge-litert==$litert_version numpy==$numpy_version (pip)"
"$host_python" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-compile \
  --target "$work/sysroot/site" --platform manylinux_2_27_aarch64 \
  --python-version "$python_version" --implementation cp --only-binary=:all: \
  "ai-edge-litert==$litert_version" "numpy==$numpy_version"

mv "$work/sysroot" "$dir/sysroot"
echo "$stamp" > "$dir/ready"
step "checking the emulated interpreter"
"$here/run.sh" --check
step "ready in $dir"
