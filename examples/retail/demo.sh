#!/usr/bin/env bash
# The retail demo on a fresh Debian machine with Rust: builds the `medallion` CLI, generates
# the demo data and runs the pipeline natively into ./lake. Arguments go to `medallion demo`
# (try --scale 2, --more, --help).
#
# The CLI is built without its wasmtime guest module (MEDALLION_SKIP_GUEST_BUILD=1): compiling
# DataFusion a second time for wasm32-wasip1 would double the first build, and the demo runs
# the engine in-process (--engine native). `cargo build --bin medallion` (or tests/run.sh)
# builds the guest too, after installing clang and wasi-libc; `--engine guest` needs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion/target}"
echo "building medallion (the first build takes a while; progress below) …" >&2
MEDALLION_SKIP_GUEST_BUILD=1 cargo build --bin medallion
bin="$CARGO_TARGET_DIR/debug/medallion"
"$bin" demo --engine native "$@"
echo "the CLI: $bin (e.g. $bin query --engine native \"SELECT * FROM low_stock_alerts\" --lake lake; --engine guest needs the guest module: cargo build --bin medallion)" >&2
