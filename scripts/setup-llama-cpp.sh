#!/usr/bin/env bash
# llama.cpp's Python bindings, llama-cpp-python[server] 0.3.x built from PyPI's source, in
# .cache/llama-cpp-venv (or $LLAMA_CPP_VENV): trainer/tests/gguf_export.rs loads exported
# GGUF files in llama.cpp with them, and scripts/bench-serve.sh runs llama.cpp's server.
# Building takes several minutes on two cores, once; a machine where it cannot be built still
# passes (the export test prints that it skipped the llama.cpp check, the benchmark runs
# without its peer), so this script never fails.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${LLAMA_CPP_VENV:-.cache/llama-cpp-venv}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp.server.app, uvicorn" 2>/dev/null; then
    exit 0
fi
echo "building llama-cpp-python[server] into $VENV (once; several minutes)" >&2
# For this CPU's instruction sets, but never AMX: on a virtual machine with AMX (Sapphire
# Rapids) llama.cpp's AMX path crashes on its first Q4_1 matmul.
cmake_args="-DGGML_NATIVE=OFF"
for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
    avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
    if grep -qw "${pair%%:*}" /proc/cpuinfo; then
        cmake_args="$cmake_args -DGGML_${pair#*:}=ON"
    fi
done
if python3 -m venv "$VENV" &&
    CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) timeout 1800 \
        "$VENV/bin/pip" install --quiet --no-cache-dir 'llama-cpp-python[server]>=0.3,<0.4'; then
    exit 0
fi
echo "llama-cpp-python[server] could not be installed: the llama.cpp checks are skipped" >&2
exit 0
