#!/usr/bin/env bash
# Formatting and clippy (-D warnings) for every build of the code: native (all crates and
# tests), the browser bindings on wasm32-unknown-unknown, the guest on wasm32-wasip1.
# Run before committing; CI runs only the format check (see tests/run.sh for why).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion/target}"
cargo fmt --all --check
cargo clippy --workspace --all-targets --features medallion-host/cluster -- -D warnings
cargo clippy -p medallion-wasm --target wasm32-unknown-unknown -- -D warnings
cargo clippy -p medallion-guest --target wasm32-wasip1 -- -D warnings
echo "lint: clean"
