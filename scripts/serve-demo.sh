#!/usr/bin/env bash
# The main job: builds the release server and the release WASM bundle, then serves the web
# app and API on http://127.0.0.1:3000 with the embedded SQLite database and demo data.
# Extra arguments go to `pairwise serve` (e.g. --bind 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
SKIP_BROWSER=1 PROFILE=release ./scripts/build-site.sh
exec cargo run --locked --release -p pairwise-server -- serve --demo "$@"
