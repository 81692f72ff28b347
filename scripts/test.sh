#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end tests against
# SQLite and a local Postgres (started here if it is down). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Postgres on 127.0.0.1:5432 (trust auth). Each test creates and drops its own database.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    fi
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "Postgres is not reachable on 127.0.0.1:5432" >&2; exit 1; }
# Databases left behind by an interrupted earlier run.
psql -h 127.0.0.1 -U postgres -d postgres -Atc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'pairwise_test_%' OR datname LIKE 'pairwise_bench_%'" |
    while read -r name; do psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)"; done

rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
# The browser side first: the browser tests load the WASM bundle it writes to target/site.
# (scripts/build-site.sh also installs the wasm32 target, wasm-bindgen-cli, wasm-opt and
# Chromium + chromedriver when they are missing.)
./scripts/build-site.sh
cargo clippy -p pairwise-hydrate --target wasm32-unknown-unknown --locked -- -D warnings
# Default members: everything but the WASM entry crate (built above for wasm32).
cargo clippy --all-targets --locked -- -D warnings
# The server binary, for the tests that run a server in a process of its own (to kill it).
cargo build --locked --bin pairwise
# llama.cpp's Python bindings: the GGUF export test loads its files in llama.cpp too.
./scripts/setup-llama-cpp.sh
cargo test --locked
# The trainer's CUDA backend must compile; nothing runs on a GPU here. scripts/build-cuda.sh lays
# out a build-only CUDA toolkit from NVIDIA's PyPI wheels in .tools/cuda and builds into
# target/cuda (10.4 min cold on 2 cores, toolkit download included, so it runs last).
./scripts/build-cuda.sh
