#!/usr/bin/env bash
# Build-only check of the trainer's CUDA backend: `cargo build -p pairwise-trainer --features cuda
# --locked` on a machine with no GPU and no CUDA install, against the toolkit that
# scripts/setup-cuda.sh lays out from NVIDIA's PyPI wheels. Nothing here runs on a GPU; the
# binary it makes needs a real driver (and the CUDA 13 libraries on its library path) to start.
# Extra arguments go to cargo (e.g. --release, -v).
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_ROOT_DIR=$(scripts/setup-cuda.sh)

# cudarc's build script (dynamic-linking, as candle-core enables it) takes the first of
# CUDA_HOME/CUDA_PATH/CUDA_ROOT/CUDA_TOOLKIT_ROOT_DIR that is set as the toolkit root and adds
# its lib/, lib/stubs/, lib64/ as link search paths; without one it looks in /usr/local/cuda etc.
# All three common names are set to the same root so that no tool picks a stray system CUDA.
export CUDA_ROOT=$CUDA_ROOT_DIR
export CUDA_PATH=$CUDA_ROOT_DIR
export CUDA_HOME=$CUDA_ROOT_DIR
# nvcc on PATH: cudarc runs `nvcc --version` to pick its CUDA API version
# (cuda-version-from-build-system), and candle-kernels' build (cudaforge) finds nvcc through
# $NVCC or PATH; nvcc itself finds cicc, the headers and libdevice through its nvcc.profile.
export PATH=$CUDA_ROOT_DIR/bin:$PATH
export NVCC=$CUDA_ROOT_DIR/bin/nvcc
# No GPU to query: candle-kernels would otherwise run nvidia-smi for the target architecture.
# 80 = Ampere (A100), the lowest one its bf16 WMMA kernels build for; override for another GPU
# (e.g. CUDA_COMPUTE_CAP=90 for H100). The PTX kernels are compiled for exactly this arch.
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
# For the final link: candle-kernels asks for -lcudart without a search path of its own, and
# cudarc for -lcuda -lcublas -lcublasLt -lcurand -lnvrtc; cudarc's search paths cover them, and
# LIBRARY_PATH makes the same directories the linker's (cc's) default for anything else.
export LIBRARY_PATH=$CUDA_ROOT_DIR/lib:$CUDA_ROOT_DIR/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
# A target dir of its own: the cuda feature changes candle-core's features, so sharing target/
# would rebuild candle there on every switch (and hold target/'s lock during this long build).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}
# The nvcc jobs cudaforge runs at once (default: most cores); the 2-core CI machine is shared
# with cargo's own jobs.
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}

echo "build-cuda: CUDA root $CUDA_ROOT_DIR, sm_$CUDA_COMPUTE_CAP, target dir $CARGO_TARGET_DIR" >&2
exec cargo build -p pairwise-trainer --features cuda --locked "$@"
