#!/usr/bin/env bash
# The main job: builds the release server, trainer and WASM bundle, then serves the web app
# and API on http://127.0.0.1:3000 with the embedded SQLite database and demo data; training
# runs started from the admin pages use the release `pairwise-train` built here.
# Extra arguments go to `pairwise serve` (e.g. --bind 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
SKIP_BROWSER=1 PROFILE=release ./scripts/build-site.sh
cargo build --locked --release -p pairwise-server -p pairwise-trainer
export PAIRWISE_TRAINER_COMMAND=${PAIRWISE_TRAINER_COMMAND:-$PWD/target/release/pairwise-train}
exec target/release/pairwise serve --demo "$@"
