#!/usr/bin/env bash
# Builds the browser side of the web app into target/site/pkg: the WASM bundle of
# app/hydrate (wasm-bindgen glue, wasm-opt in release), the stylesheet, and gzip copies
# the server sends to browsers that accept them. PROFILE=release for the small bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
PROFILE=${PROFILE:-debug}
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
OUT=target/site/pkg
if [ "$PROFILE" = release ]; then
    cargo build --locked -p pairwise-hydrate --lib --target wasm32-unknown-unknown --profile wasm-release
    WASM="$TARGET_DIR/wasm32-unknown-unknown/wasm-release/pairwise_hydrate.wasm"
else
    cargo build --locked -p pairwise-hydrate --lib --target wasm32-unknown-unknown
    WASM="$TARGET_DIR/wasm32-unknown-unknown/debug/pairwise_hydrate.wasm"
fi
mkdir -p "$OUT"
wasm-bindgen --target web --no-typescript --out-dir "$OUT" --out-name pairwise "$WASM"
if [ "$PROFILE" = release ]; then
    # npm's binaryen (Debian's older wasm-opt produces a module browsers reject).
    tools/node_modules/.bin/wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
        --enable-sign-ext --enable-mutable-globals --enable-reference-types \
        "$OUT/pairwise_bg.wasm" -o "$OUT/pairwise_bg.wasm"
fi
cp style/main.css "$OUT/pairwise.css"
for f in pairwise_bg.wasm pairwise.js pairwise.css; do gzip -9 -k -f "$OUT/$f"; done
echo "site built ($PROFILE): $(du -h "$OUT/pairwise_bg.wasm" | cut -f1) wasm, $(du -h "$OUT/pairwise_bg.wasm.gz" | cut -f1) gzipped"
