#!/usr/bin/env bash
# Runs every test kiln has, from a clean checkout, on a fresh machine.
#
# 1. Installs the real peers the integration tests talk to when they are
#    missing (Debian packages: prometheus, promtool, node_exporter).
# 2. Checks formatting and lints (warnings are errors).
# 3. Runs the whole workspace's tests: unit, property, integration,
#    promqltest conformance and end-to-end (including the side-by-side test
#    against a real Prometheus and a real node_exporter).
# 4. Fuzzes each parser for a bounded time (scripts/fuzz.sh; installs
#    cargo-fuzz from crates.io when missing).
#
# It is the one command the README names and the one .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || missing+=(prometheus-node-exporter)
if ((${#missing[@]})); then
    echo "test.sh: installing ${missing[*]} with apt-get"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The packages start their services; tests start their own instances on
# ephemeral loopback ports, so the system services are not needed.
if command -v systemctl >/dev/null 2>&1; then
    systemctl stop prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
scripts/fuzz.sh 15
