#!/bin/sh
# Installs the servers kiln-bench compares kiln with (Prometheus, VictoriaMetrics)
# and Chromium for rendering HTML reports, then stops and disables the system
# services the Debian packages start, so that only kiln-bench runs them, on
# loopback, with fresh data dirs. Needs root (or sudo).
set -eu
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends prometheus victoria-metrics ${WITH_CHROMIUM:+chromium}
for svc in prometheus victoria-metrics prometheus-node-exporter; do
    if command -v systemctl >/dev/null 2>&1 && systemctl list-unit-files "$svc.service" >/dev/null 2>&1; then
        $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        $SUDO service "$svc" stop >/dev/null 2>&1 || true
    fi
done
for bin in prometheus promtool victoria-metrics; do
    if command -v "$bin" >/dev/null 2>&1; then
        echo "installed: $(command -v "$bin")"
    else
        echo "missing: $bin" >&2
    fi
done
