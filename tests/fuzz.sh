#!/usr/bin/env bash
# Fuzzes bronze ingestion (CSV/NDJSON, inferred and declared schemas) and the spec parser with
# libFuzzer for a fixed time each; fails if either finds a panic. Not part of CI (it needs
# cargo-fuzz and minutes of CPU); run it before releases or after changing source.rs/spec.rs.
#   tests/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
# cargo fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the machine's stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion/fuzz-target}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in ingest spec; do
  mkdir -p "corpus/$target"
  echo "== fuzzing $target for ${secs}s"
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=4096 -timeout=10
done
echo "no crash in ${secs}s per target"
