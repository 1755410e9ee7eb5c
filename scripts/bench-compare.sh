#!/bin/sh
# Whole-server comparison recorded in docs/benchmarks.md ("Whole server"):
# builds kiln-bench (and kiln, when it builds) in release mode and runs
# `kiln-bench compare` on a node-exporter-like fleet. Peers come from
# scripts/install-peers.sh. Extra arguments go to `kiln-bench compare`,
# e.g. `--servers prometheus,victoria-metrics` or `--targets 200`.
#
#   TARGETS=1000 DURATION=150s scripts/bench-compare.sh
set -eu
cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -p kiln-bench
if ! cargo build --release -p kiln; then
    echo "bench-compare: kiln does not build; comparing the peers only" >&2
fi
OUT=${OUT:-$TARGET_DIR/kiln-bench/compare-${TARGETS:-1000}}
exec "$TARGET_DIR/release/kiln-bench" compare \
    --targets "${TARGETS:-1000}" \
    --interval "${INTERVAL:-15s}" \
    --duration "${DURATION:-150s}" \
    --program "kiln=$TARGET_DIR/release/kiln" \
    --out "$OUT" "$@"
