#!/usr/bin/env bash
# Installs what building and testing the web app needs, from the package registries only
# (idempotent: a second run only checks): the wasm32 target, wasm-bindgen-cli at the
# version Cargo.lock pins, npm's binaryen for wasm-opt, and Chromium + chromedriver for the
# browser tests (SKIP_BROWSER=1 leaves those out).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
WB=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$WB" ]; then
    # Not --locked: its lockfile pins a crate version the registry mirror lacks.
    cargo install wasm-bindgen-cli --version "$WB"
fi
if [ ! -x tools/node_modules/.bin/wasm-opt ]; then
    npm install --prefix tools --no-audit --no-fund --silent binaryen@132.0.0
fi
if [ "${SKIP_BROWSER:-0}" != 1 ] && ! { command -v chromium && command -v chromedriver; } >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver
fi
