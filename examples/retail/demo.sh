#!/usr/bin/env bash
# The retail demo on a fresh Debian machine with Rust: installs what the build needs (the
# wasm32-wasip1 target, and clang + wasi-libc to compile zstd's C code for the wasmtime
# guest), builds `medallion` (which builds its guest module), generates the demo data and runs
# the pipeline into ./lake. Arguments go to `medallion demo` (try --scale 2, --more, --help).
set -euo pipefail
cd "$(dirname "$0")/../.."
need=()
for p in clang llvm wasi-libc; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing ${need[*]} (Debian packages) …" >&2
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup target add wasm32-wasip1 >/dev/null 2>&1 || true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion/target}"
echo "building medallion and its wasmtime guest (the first build takes a while) …" >&2
cargo build --quiet --bin medallion
exec "$CARGO_TARGET_DIR/debug/medallion" demo "$@"
