#!/usr/bin/env bash
# Build the real kube-apiserver, kube-scheduler, kube-controller-manager (k8s.io/kubernetes v1.36.3) and etcd
# (the version that kubernetes release pins) from Go modules, for the local test
# control plane started by scripts/controlplane.py.
#
# Output: ${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}/bin/k8s-v1.36.3/{kube-apiserver,kube-scheduler,kube-controller-manager,etcd}
# Needs only a Go toolchain (>= 1.26) and access to the Go module proxy. Nothing is written
# into the repository: module and build caches stay at Go's defaults (GOMODCACHE/GOCACHE).
# Idempotent: if all binaries already exist it only prints their paths.
# A cold build takes several minutes on a small machine (the first run downloads modules).
set -euo pipefail

K8S_VERSION="v1.36.3"
HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/k8s-harness" && pwd)"
CACHE_DIR="${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}"
BIN_DIR="${CACHE_DIR}/bin/k8s-${K8S_VERSION}"
BINARIES=(kube-apiserver kube-scheduler kube-controller-manager etcd)

print_paths() {
    for name in "${BINARIES[@]}"; do
        echo "${BIN_DIR}/${name}"
    done
}

all_present=1
for name in "${BINARIES[@]}"; do
    [[ -x "${BIN_DIR}/${name}" ]] || all_present=0
done
if [[ ${all_present} -eq 1 ]]; then
    echo "control-plane binaries already built (delete ${BIN_DIR} to rebuild):" >&2
    print_paths
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "error: 'go' not found in PATH (Go >= 1.26 is required)" >&2
    exit 1
fi

mkdir -p "${BIN_DIR}"
start=$(date +%s)

# Each binary is linked to a temporary name and renamed, so an interrupted build never
# leaves a truncated binary that the "already built" check above would accept.
# -buildvcs=false: the harness lives inside the project's git checkout; don't stamp
# the project's git state into the binaries (and don't require git to build).
# The -X flags stamp the release version (otherwise /version and --version report
# "v0.0.0-master", which version-checking clients such as Karpenter reject).
VERSION_PKG="k8s.io/component-base/version"
MINOR="${K8S_VERSION#v1.}"
MINOR="${MINOR%%.*}"
K8S_LDFLAGS="-s -w -X ${VERSION_PKG}.gitVersion=${K8S_VERSION} -X ${VERSION_PKG}.gitMajor=1"
K8S_LDFLAGS+=" -X ${VERSION_PKG}.gitMinor=${MINOR} -X ${VERSION_PKG}.gitTreeState=clean"

build() { # build <module dir> <package> <output name> <ldflags>
    local tmp="${BIN_DIR}/.${3}.tmp.$$"
    echo "building ${3} ..." >&2
    (cd "$1" && go build -buildvcs=false -trimpath -ldflags="$4" -o "${tmp}" "$2")
    mv -f "${tmp}" "${BIN_DIR}/${3}"
}
trap 'rm -f "${BIN_DIR}"/.*.tmp.$$' EXIT

# Only what is missing is built (a cache from before kube-controller-manager was added keeps the rest).
for name in kube-apiserver kube-scheduler kube-controller-manager; do
    [[ -x "${BIN_DIR}/${name}" ]] || build "${HARNESS_DIR}" "./cmd/${name}" "${name}" "${K8S_LDFLAGS}"
done
[[ -x "${BIN_DIR}/etcd" ]] || build "${HARNESS_DIR}/etcd" . etcd "-s -w"

end=$(date +%s)
echo "built control-plane binaries in $((end - start))s:" >&2
print_paths
