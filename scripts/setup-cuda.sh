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
# Debian's libcuda1, for linking only (see fetch_libcuda).
LIBCUDA_SUITE=${LIBCUDA_SUITE:-trixie}
LIBCUDA_VERSION=${LIBCUDA_VERSION:-550.163.01-2}
STAMP_TEXT="$(printf '%s\n' "${WHEELS[@]}" "libcuda1=$LIBCUDA_VERSION/$LIBCUDA_SUITE" layout-v1)"
ROOT=$TOOLS/nvidia/cu13
STAMP=$TOOLS/.stamp

log() { echo "setup-cuda: $*" >&2; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ] && [ -x "$ROOT/bin/nvcc" ]; then
    echo "$ROOT"
    exit 0
fi

mkdir -p "$TOOLS/wheels"
# Drop wheels of versions no longer pinned.
for whl in "$TOOLS"/wheels/*.whl; do
    [ -e "$whl" ] || continue
    keep=0
    for spec in "${WHEELS[@]}"; do
        prefix="$(echo "${spec%%==*}" | tr '-' '_')-${spec##*==}-"
        case $(basename "$whl") in "$prefix"*) keep=1 ;; esac
    done
    [ $keep = 1 ] || { log "removing unpinned $(basename "$whl")"; rm -f "$whl"; }
done
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
        if not info.filename.startswith("nvidia/"):
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

# lib/stubs/libcuda.so, the driver library that cudarc links (-lcuda). A CUDA toolkit ships a stub
# of it (lib64/stubs/libcuda.so, from NVIDIA's cuda-driver-dev/cuda_cudart), but none of NVIDIA's
# PyPI wheels does (nor any other registry package), and a hand-made stub is not an option. Debian
# packages the real driver library as libcuda1 in its non-free component: the .deb is fetched
# with apt-get (a private, throw-away package list under .tools/cuda/apt, so no root, and this
# machine's apt setup is left as it is), unpacked with dpkg-deb, and only its libcuda.so.<ver>
# is kept, under the link-time name libcuda.so. It is only linked against: the binary records
# NEEDED libcuda.so.1, which a GPU machine's own driver provides, and nothing here is named
# libcuda.so.1, so a stray LD_LIBRARY_PATH cannot load this copy in place of the real driver.
# Which one: the newest driver API Debian has, 550 (CUDA 12.4). The trainer's binary needs 30 cu*
# functions, all in it (and in bookworm's 535); cudarc also wraps a few newer ones that no Debian
# libcuda exports (cuCtxCreate_v4, cuEventElapsedTime_v2: CUDA 12.8/13.0) and candle 0.11 does
# not reach: a change that reaches them fails here at link time with an undefined reference.
fetch_libcuda() {
    local stubs=$ROOT/lib/stubs apt=$TOOLS/apt uri arch opts deb
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null ||
        { log "apt-get and dpkg-deb are needed for libcuda.so (Debian's libcuda1)"; exit 1; }
    # The Debian archive this machine already uses (its host is not written here).
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' |
          tr ' ' '\n' | grep -v security | grep . | head -n1 || true)
    [ -n "$uri" ] || uri=$(grep -hE '^deb[[:space:]]' /etc/apt/sources.list 2>/dev/null |
          sed -E 's/\[[^]]*\][[:space:]]*//' | awk '$2 !~ /security/ {print $2; exit}' || true)
    [ -n "$uri" ] || { log "no Debian archive found in /etc/apt to fetch libcuda1 from"; exit 1; }
    arch=$(dpkg --print-architecture)
    rm -rf "$apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts" "$apt/debs"
    echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $LIBCUDA_SUITE non-free" \
        > "$apt/sources.list"
    opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
          -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1
          -o Acquire::Languages=none -o "APT::Architectures=$arch" -o APT::Sandbox::User=root -qq)
    log "fetching libcuda1 $LIBCUDA_VERSION ($LIBCUDA_SUITE non-free) for linking"
    apt-get "${opts[@]}" update >&2
    # A point release can replace the pinned version: then take the suite's current one.
    ( cd "$apt/debs" && { apt-get "${opts[@]}" download "libcuda1=$LIBCUDA_VERSION" 2>/dev/null ||
        { log "libcuda1 $LIBCUDA_VERSION is gone from $LIBCUDA_SUITE; taking its current one";
          apt-get "${opts[@]}" download libcuda1; }; } ) >&2
    deb=$(ls "$apt"/debs/libcuda1_*.deb | head -n1)
    dpkg-deb -x "$deb" "$apt/x"
    mkdir -p "$stubs"
    cp "$(ls "$apt"/x/usr/lib/*/nvidia/current/libcuda.so.[0-9]*.* | head -n1)" "$stubs/libcuda.so"
    echo "link-time only: the real libcuda from Debian's $(basename "$deb"); see scripts/setup-cuda.sh" \
        > "$stubs/README"
    rm -rf "$apt"
}
fetch_libcuda

"$ROOT/bin/nvcc" --version >&2
printf '%s' "$STAMP_TEXT" > "$STAMP"
echo "$ROOT"
