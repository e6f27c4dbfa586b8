#!/usr/bin/env bash
# Installs what tests/image needs to build the Dockerfile without a Docker engine or a registry, from Debian's
# packages, when a tool is missing: buildah (the builder: chroot isolation, no OCI runtime, no daemon) and
# mmdebstrap (a Debian bookworm root filesystem with python3, imported as the base image where the real one
# cannot be pulled). Idempotent and quiet (apt's output is shown only on failure); needs root or sudo.
set -euo pipefail
if command -v buildah >/dev/null 2>&1 && command -v mmdebstrap >/dev/null 2>&1; then
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-image-tools.sh: root or sudo is needed to install buildah and mmdebstrap" >&2; exit 1; }
  SUDO=(sudo)
fi
LOG="$(mktemp -t install-image-tools.XXXXXX.log)"
trap 'rm -f "$LOG"' EXIT
echo "== installing buildah and mmdebstrap (Debian packages)"
if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah mmdebstrap; } \
    >"$LOG" 2>&1; then
  cat "$LOG" >&2
  echo "install-image-tools.sh: apt-get could not install buildah and mmdebstrap" >&2
  exit 1
fi
for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-image-tools.sh: the packages installed no $tool on PATH" >&2; exit 1; }
done
