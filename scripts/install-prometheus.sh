#!/usr/bin/env bash
# Installs Prometheus and promtool from Debian's package `prometheus` when either is missing: the tests under
# tests/prometheus/ start their own server from it. Idempotent and quiet (apt's output is shown only on failure);
# needs root or sudo. If the package starts its own service (port 9090) it is left alone: the tests use a port
# of their own.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-prometheus.sh: root or sudo is needed to install prometheus" >&2; exit 1; }
  SUDO=(sudo)
fi
LOG="$(mktemp -t install-prometheus.XXXXXX.log)"
trap 'rm -f "$LOG"' EXIT
echo "== installing prometheus and promtool (Debian package prometheus)"
if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
    >"$LOG" 2>&1; then
  cat "$LOG" >&2
  echo "install-prometheus.sh: apt-get could not install prometheus" >&2
  exit 1
fi
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "install-prometheus.sh: the package installed no prometheus or promtool on PATH" >&2
  exit 1
fi
