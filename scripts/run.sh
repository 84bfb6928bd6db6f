#!/usr/bin/env bash
# Builds Huddle in release mode and serves it on http://127.0.0.1:3000 with data in ./data.
# Extra arguments go to the server (see `target/release/huddle --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HUDDLE_SETUP_E2E=0 source scripts/setup.sh
echo "[run] building (release)"
cargo leptos build --release
echo "[run] serving on http://${HUDDLE_ADDR:-127.0.0.1:3000}"
exec target/release/huddle "$@"
