#!/usr/bin/env bash
# Runs each fuzz target of ingest/fuzz for N seconds (default 60), seeding
# its corpus from the test tables: the exposition case table, standalone
# files and OpenMetrics suite for the exposition parser, testdata/configs
# for the config parser. Findings land in ingest/fuzz/artifacts/<target>/
# and make the script fail.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on stable through
# RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(exposition config)

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

corpus=ingest/fuzz/corpus
mkdir -p "$corpus/exposition" "$corpus/config"
find testdata/exposition -type f \( -name '*.txt' -o -name '*.prom' -o -name metrics \) \
    -exec sh -c 'for f; do cp "$f" "$0/$(echo "$f" | tr / _)"; done' "$corpus/exposition" {} +
for f in testdata/configs/*.yml; do cp "$f" "$corpus/config/$(basename "$f")"; done

for t in "${targets[@]}"; do
    echo "fuzz.sh: $t for ${secs}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir ingest/fuzz "$t" "$corpus/$t" -- \
        -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10
done
