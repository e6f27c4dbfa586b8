#!/usr/bin/env bash
# Makes the project's own virtualenv, .venv/, from uv.lock (never the interpreter on PATH, whose packages
# could hide an undeclared dependency and which Debian's Python refuses to install into, PEP 668).
#
#   bash scripts/setup.sh          # everything: the package, the dev and sim extras (tests, linters, plots)
#   bash scripts/setup.sh --demo   # only the package and what it imports (enough for serve and the demo)
#
# uv (pinned below) resolves and installs; it is itself installed from PyPI into a virtualenv under
# ~/.cache/mig-extender/, with its download cache beside it. Needs a Python >= 3.11 as python3.
# Refresh the lock after changing pyproject.toml: bash scripts/setup.sh --lock
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="0.13.8"
CACHE_DIR="${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}"
UV_HOME="${CACHE_DIR}/uv-${UV_VERSION}"
export UV_CACHE_DIR="${CACHE_DIR}/uv-cache"
export UV_PYTHON_DOWNLOADS=never          # use the machine's python3, never fetch one
export UV_PROJECT_ENVIRONMENT="$PWD/.venv"
export UV_NO_PROGRESS=1

say() { echo "setup: $*" >&2; }

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "error: $PYTHON is missing or older than 3.11 (set PYTHON=/path/to/python3.11+)"
    exit 2
fi

if [[ ! -x "${UV_HOME}/bin/uv" ]]; then
    say "installing uv ${UV_VERSION} into ${UV_HOME}"
    rm -rf "${UV_HOME}"
    "$PYTHON" -m venv "${UV_HOME}"
    "${UV_HOME}/bin/pip" install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
fi
UV="${UV_HOME}/bin/uv"

case "${1:-}" in
    --lock)
        "$UV" lock --python "$PYTHON"
        ;;
    --demo)
        say "making .venv with the package only (uv.lock, no extras)"
        # --inexact: leave the extras alone if a full setup installed them before.
        "$UV" sync --locked --inexact --no-extra dev --no-extra sim --python "$PYTHON" --quiet
        ;;
    "")
        say "making .venv with the package, the dev and the sim extras (uv.lock)"
        "$UV" sync --locked --extra dev --extra sim --python "$PYTHON" --quiet
        ;;
    *)
        say "error: unknown option '$1' (use --demo, --lock or nothing)"
        exit 2
        ;;
esac
say "ready: .venv/bin/mig-extender ($(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'))"
