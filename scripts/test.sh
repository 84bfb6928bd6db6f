#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests, then the Playwright suite in Chromium
# against a freshly built server. Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
started=$(date +%s)

# The 1,000-client reconnect storm runs on its own (below): beside the other fault tests'
# kill -9 restarts it has hung in CI, while alone it passes in seconds.
storm=reconnect_storm_of_a_thousand_clients_misses_nothing

# Lints first: they fail in seconds where the suites take minutes.
echo "[test] rustfmt and clippy"
cargo fmt --all --check
cargo clippy --locked --features ssr,loadgen --all-targets -- -D warnings
cargo clippy --locked --no-default-features --features hydrate --lib --target wasm32-unknown-unknown -- -D warnings

echo "[test] cargo test"
cargo test --locked --features loadgen -- --skip "$storm"
cargo test --locked --features loadgen --test suite "resilience::$storm" -- --exact

# The chat core's integration suites again, every server on PostgreSQL (the tests start their
# own cluster on a free loopback port).
echo "[test] cargo test on PostgreSQL"
HUDDLE_TEST_DATABASE=postgres cargo test --locked --features loadgen --test suite -- --skip "$storm" \
  chat:: accounts:: authz:: board:: foundation:: resilience:: search:: mentions:: files::
HUDDLE_TEST_DATABASE=postgres cargo test --locked --features loadgen --test suite "resilience::$storm" -- --exact

echo "[test] building server and WASM client for the browser tests"
cargo leptos build

echo "[test] playwright"
export HUDDLE_BIN="$PWD/target/debug/huddle" HUDDLE_SITE_ROOT="$PWD/target/site"
(cd end2end && npx playwright test "$@")

echo "[test] all passed in $(( $(date +%s) - started )) s"
