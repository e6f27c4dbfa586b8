#!/usr/bin/env bash
# Build the DRA allocator reference (tests/dra_reference): kube-scheduler's structured
# allocator from k8s.io/dynamic-resource-allocation v0.36.3, reading cases as JSON lines
# on stdin, for tests/model/dra/test_allocator_reference.py.
#
# Output: ${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}/bin/dra-reference-v0.36.3/dra-reference
# Needs only a Go toolchain (>= 1.26) and access to the Go module proxy. Nothing is written
# into the repository. Idempotent: rebuilt only when the source or go.mod/go.sum changed
# (their hash is part of the binary's directory), otherwise it only prints the path.
set -euo pipefail

DRA_VERSION="v0.36.3"
SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/dra_reference" && pwd)"
CACHE_DIR="${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}"
BIN_DIR="${CACHE_DIR}/bin/dra-reference-${DRA_VERSION}"
SOURCE_HASH="$(cat "${SRC_DIR}/main.go" "${SRC_DIR}/go.mod" "${SRC_DIR}/go.sum" | sha256sum | cut -c1-16)"
BINARY="${BIN_DIR}/dra-reference"
STAMP="${BIN_DIR}/source-hash"

if [[ -x "${BINARY}" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${SOURCE_HASH}" ]]; then
    echo "DRA reference already built (delete ${BIN_DIR} to rebuild):" >&2
    echo "${BINARY}"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "error: 'go' not found in PATH (Go >= 1.26 is required)" >&2
    exit 1
fi

mkdir -p "${BIN_DIR}"
start=$(date +%s)
# Linked to a temporary name and renamed, so an interrupted build never leaves a
# truncated binary behind; -buildvcs=false: don't stamp the project's git state.
tmp="${BIN_DIR}/.dra-reference.tmp.$$"
trap 'rm -f "${tmp}"' EXIT
echo "building dra-reference ..." >&2
(cd "${SRC_DIR}" && go build -buildvcs=false -trimpath -ldflags="-s -w" -o "${tmp}" .)
mv -f "${tmp}" "${BINARY}"
echo "${SOURCE_HASH}" >"${STAMP}"
end=$(date +%s)
echo "built the DRA reference in $((end - start))s:" >&2
echo "${BINARY}"
