#!/usr/bin/env bash
# Does an arm64-profile bundle run on aarch64, and does it answer like on x86?
#
# No ARM machine here: the torch-free runtime (kgedge.runtime + numpy + onnxruntime, aarch64 wheels)
# runs under qemu user-mode emulation with an aarch64 CPython taken from Debian's arm64 packages.
# Steps: (1) qemu + an aarch64 root cached under .cache/arm64-root (git-ignored: /.cache/),
# (2) on x86: train a small model, export it with the arm64 profile, record x86 top-k ids,
# (3) under qemu: load the same bundle and answer the same queries, (4) compare, write
# benchmarks/results/arm64_emulated.{json,md}. Emulated timings are NOT performance figures.
#
# Re-runnable: every step that is already done is skipped. Needs root (apt-get) the first time.
#   bash benchmarks/arm64_emulated.sh            # ~1-2 min once the root is cached
# Environment: ARM64_ROOT (default .cache/arm64-root), ARM64_WORK (default .cache/arm64-work), ORT_ARM_VERSION (default 1.27.0: 1.28-1.32
# crash on import under qemu), QEMU_CPU (default neoverse-n1: qemu's default model gave wrong int8
# results with onnxruntime 1.27), PYTHON (the x86 interpreter with kgedge[train], default python),
# ARM64_CHECK=1 (exit 1 unless aarch64 returns the exact integer ids: .ci/run sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
ROOT="${ARM64_ROOT:-$REPO/.cache/arm64-root}"
WORK="${ARM64_WORK:-$REPO/.cache/arm64-work}"
ORT_ARM_VERSION="${ORT_ARM_VERSION:-1.27.0}"
NUMPY_ARM_VERSION="${NUMPY_ARM_VERSION:-2.3.5}"
export QEMU_CPU="${QEMU_CPU:-neoverse-n1}"
PYTHON="${PYTHON:-python}"
SITE="$ROOT/site"
mkdir -p "$ROOT" "$WORK"
say() { echo "[arm64] $*" >&2; }

# -- 1. qemu and the aarch64 root ------------------------------------------------------------------
if ! command -v qemu-aarch64-static >/dev/null; then
    say "installing qemu-user-static"
    apt-get update -qq && apt-get install -y -qq qemu-user-static >/dev/null
fi
# CPython and what its core modules link to (Debian 12 names; libmpdec3 exists on newer releases only)
DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6
      zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 libncursesw6
      libtinfo6 libreadline8 libcrypt1)
OPTIONAL_DEBS=(libmpdec3)
if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        say "adding the arm64 architecture to apt"
        dpkg --add-architecture arm64
    fi
    apt-get update -qq
    mkdir -p "$WORK/debs"
    say "downloading ${#DEBS[@]} arm64 packages"
    (cd "$WORK/debs" && apt-get download -qq "${DEBS[@]/%/:arm64}")
    for deb in "${OPTIONAL_DEBS[@]}"; do
        (cd "$WORK/debs" && apt-get download -qq "$deb:arm64" 2>/dev/null) || say "no $deb:arm64 here (optional)"
    done
    for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$ROOT"; done
fi
if [ ! -d "$SITE/onnxruntime" ] || [ ! -f "$SITE/.ort-$ORT_ARM_VERSION" ]; then
    say "fetching aarch64 wheels: numpy $NUMPY_ARM_VERSION, onnxruntime $ORT_ARM_VERSION"
    rm -rf "$SITE" "$WORK/wheels" && mkdir -p "$SITE" "$WORK/wheels"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
        --python-version 3.11 --implementation cp -d "$WORK/wheels" \
        "numpy==$NUMPY_ARM_VERSION" "onnxruntime==$ORT_ARM_VERSION"
    for wheel in "$WORK"/wheels/*.whl; do "$PYTHON" -m zipfile -e "$wheel" "$SITE"; done
    touch "$SITE/.ort-$ORT_ARM_VERSION"
fi
arm_python() {
    PYTHONPATH="$REPO:$SITE" PYTHONNOUSERSITE=1 qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11" "$@"
}
arm_python -c "import platform, numpy, onnxruntime; print('[arm64] emulated', platform.machine(), 'numpy', numpy.__version__, 'onnxruntime', onnxruntime.__version__)" >&2

# -- 2. x86: bundle + reference answers ------------------------------------------------------------
"$PYTHON" benchmarks/arm64_check.py prepare --work "$WORK"
# -- 3. aarch64 (emulated): the same bundle, the same queries ---------------------------------------
started=$(date +%s)
arm_python benchmarks/arm64_check.py answer --work "$WORK"
say "emulated run took $(( $(date +%s) - started )) s (emulation: not a performance figure)"
# -- 4. compare and report --------------------------------------------------------------------------
"$PYTHON" benchmarks/arm64_check.py compare --work "$WORK" --qemu-cpu "$QEMU_CPU" ${ARM64_CHECK:+--check}
