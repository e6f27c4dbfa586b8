#!/usr/bin/env bash
# Installs the package with its development tools into the current Python (>= 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[dev,sim]'
