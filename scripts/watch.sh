#!/usr/bin/env bash
# Development loop: rebuilds server and client on change and reloads the browser.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HUDDLE_SETUP_E2E=0 source scripts/setup.sh
exec cargo leptos watch "$@"
