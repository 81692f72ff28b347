#!/usr/bin/env bash
# Lays out a build-only CUDA toolkit in .tools/cuda/ (git-ignored) from NVIDIA's PyPI wheels,
# so that `cargo build -p pairwise-trainer --features cuda` compiles on a machine with no GPU,
# no CUDA install and no root: only python3 with pip and the package registries.
# Idempotent: a second run with the same pins only checks a stamp; prints the CUDA root on stdout
# (everything else goes to stderr).
#
# The CUDA 13 wheels all unpack under nvidia/cu13/ with the toolkit's own shape (bin/nvcc,
# nvvm/, include/, include/cccl/, lib/), and nvcc.profile resolves everything relative to bin/..,
# so that directory is used as the root as it is. What the wheels lack, and is added here:
#   - the unversioned dev names (libcudart.so -> libcudart.so.13, ...) that `-lcudart` and
#     cudarc's `-lcublas`/`-lcurand`/`-lnvrtc` need: the toolkit's -dev packages ship these links;
#   - lib64 -> lib, where cudaforge and many build scripts look;
#   - lib/stubs/libcuda.so: cudarc (dynamic-linking, as candle-core asks) links the driver, which no
#     wheel ships; see fetch_libcuda below.
#
# Versions: CUDA 13.4 update 1 (13.4.92), the newest that cudarc 0.19.10 (Cargo.lock) knows:
# its build script runs `nvcc --version` and panics on an unknown release (13.5 is one).
# cuBLAS/cuRAND/cccl have their own numbering; these are the releases that the cuda-toolkit
# 13.4.3 meta-package on PyPI pins for CUDA 13.4.92.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
TOOLS=${CUDA_TOOLS_DIR:-$REPO/.tools/cuda}
PY=${PYTHON:-python3}

WHEELS=(
    nvidia-cuda-nvcc==13.4.92     # nvcc, ptxas, fatbinary, nvlink, cudafe++
    nvidia-nvvm==13.4.92          # cicc + libdevice: nvcc's device front end
    nvidia-cuda-crt==13.4.92      # include/crt/*: headers nvcc's host pass includes
    nvidia-cuda-runtime==13.4.92  # cuda.h, cuda_runtime.h, ... and libcudart.so.13
    nvidia-cuda-cccl==13.3.4.3.1  # include/cccl (libcu++): cuda_fp16.h/cuda_bf16.h include it
    nvidia-cuda-nvrtc==13.4.92    # libnvrtc.so.13 (cudarc links -lnvrtc)
    nvidia-curand==10.4.4.72      # libcurand.so.10 (cudarc links -lcurand)
    nvidia-cublas==13.8.0.4       # libcublas.so.13, libcublasLt.so.13 (cudarc links both)
)
STAMP_TEXT="$(printf '%s\n' "${WHEELS[@]}" layout-v1)"
ROOT=$TOOLS/nvidia/cu13
STAMP=$TOOLS/.stamp

log() { echo "setup-cuda: $*" >&2; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ] && [ -x "$ROOT/bin/nvcc" ]; then
    echo "$ROOT"
    exit 0
fi

mkdir -p "$TOOLS/wheels"
# Download only what is missing (a wheel's file name starts with its normalized name-version).
for spec in "${WHEELS[@]}"; do
    name=${spec%%==*}; ver=${spec##*==}
    prefix="$(echo "$name" | tr '-' '_')-$ver-"
    if ! compgen -G "$TOOLS/wheels/$prefix*.whl" >/dev/null; then
        log "downloading $spec"
        "$PY" -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: -d "$TOOLS/wheels" "$spec" >&2
    fi
done

# Unpack into a fresh tree (keeping the unix modes stored in the wheel: nvcc, cicc, ptxas...).
rm -rf "$TOOLS/nvidia" "$TOOLS/.unpack"
mkdir -p "$TOOLS/.unpack"
for spec in "${WHEELS[@]}"; do
    name=${spec%%==*}; ver=${spec##*==}
    prefix="$(echo "$name" | tr '-' '_')-$ver-"
    whl=$(compgen -G "$TOOLS/wheels/$prefix*.whl" | head -n1)
    log "unpacking $(basename "$whl")"
    "$PY" - "$whl" "$TOOLS/.unpack" <<'PYEOF'
import os, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if info.filename.startswith("nvidia/") is False:
            continue  # the .dist-info
        path = z.extract(info, dest)
        mode = (info.external_attr >> 16) & 0o777
        if mode and not info.is_dir():
            os.chmod(path, mode)
PYEOF
done
mv "$TOOLS/.unpack/nvidia" "$TOOLS/nvidia"
rm -rf "$TOOLS/.unpack"

# The toolkit's dev links: libfoo.so -> libfoo.so.N.
for lib in "$ROOT"/lib/lib*.so.*; do
    base=$(basename "$lib")
    dev=${base%%.so.*}.so
    [ -e "$ROOT/lib/$dev" ] || ln -s "$base" "$ROOT/lib/$dev"
done
ln -sfn lib "$ROOT/lib64"

fetch_libcuda() { :; }
fetch_libcuda

"$ROOT/bin/nvcc" --version >&2
printf '%s' "$STAMP_TEXT" > "$STAMP"
echo "$ROOT"
