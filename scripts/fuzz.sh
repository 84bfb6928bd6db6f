#!/usr/bin/env bash
# Runs the frame-decoding fuzz target (fuzz/fuzz_targets/decode_frame.rs) for a while:
#   bash scripts/fuzz.sh [seconds, default 60]
# Needs a nightly toolchain; installs cargo-fuzz if it is missing. Not part of CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
seconds="${1:-60}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p corpus/decode_frame
cargo +nightly fuzz run decode_frame corpus/decode_frame seeds/decode_frame -- -max_total_time="$seconds"
