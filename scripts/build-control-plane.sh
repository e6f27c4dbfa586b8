#!/usr/bin/env bash
# Build the real kube-apiserver, kube-scheduler, kube-controller-manager (k8s.io/kubernetes) and etcd
# (the version that kubernetes release pins) from Go modules, for the local test
# control plane started by scripts/controlplane.py.
#
# Usage: build-control-plane.sh [VERSION]   (or MIG_EXTENDER_K8S_VERSION=VERSION; default v1.36.3)
# Versions: v1.36.3 (scripts/k8s-harness/go.mod, etcd/go.mod) and v1.37.2 (k8s-v1.37.2.mod,
# etcd/etcd-v3.7.0.mod: the same mains built with go build -modfile, each file pinning that
# release, its staging modules and the etcd its go.mod requires).
#
# Output: ${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}/bin/k8s-VERSION/{kube-apiserver,kube-scheduler,kube-controller-manager,etcd}
# Needs only a Go toolchain (>= 1.26) and access to the Go module proxy. Nothing is written
# into the repository: module and build caches stay at Go's defaults (GOMODCACHE/GOCACHE).
# Idempotent: if all binaries already exist it only prints their paths.
# A cold build takes several minutes on a small machine (the first run downloads modules).
set -euo pipefail

K8S_VERSION="${1:-${MIG_EXTENDER_K8S_VERSION:-v1.36.3}}"
case "${K8S_VERSION}" in
    v1.36.3) K8S_MODFILE=go.mod ETCD_MODFILE=go.mod ;;
    v1.37.2) K8S_MODFILE=k8s-v1.37.2.mod ETCD_MODFILE=etcd-v3.7.0.mod ;;
    *)
        echo "error: unsupported Kubernetes version '${K8S_VERSION}' (supported: v1.36.3, v1.37.2)" >&2
        exit 2
        ;;
esac
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

build() { # build <module dir> <go.mod file> <package> <output name> <ldflags>
    local tmp="${BIN_DIR}/.${4}.tmp.$$"
    echo "building ${4} ${K8S_VERSION} ..." >&2
    (cd "$1" && go build -modfile="$2" -buildvcs=false -trimpath -ldflags="$5" -o "${tmp}" "$3")
    mv -f "${tmp}" "${BIN_DIR}/${4}"
}
trap 'rm -f "${BIN_DIR}"/.*.tmp.$$' EXIT

# Only what is missing is built (a cache from before kube-controller-manager was added keeps the rest).
for name in kube-apiserver kube-scheduler kube-controller-manager; do
    [[ -x "${BIN_DIR}/${name}" ]] || build "${HARNESS_DIR}" "${K8S_MODFILE}" "./cmd/${name}" "${name}" "${K8S_LDFLAGS}"
done
[[ -x "${BIN_DIR}/etcd" ]] || build "${HARNESS_DIR}/etcd" "${ETCD_MODFILE}" . etcd "-s -w"

end=$(date +%s)
echo "built control-plane binaries ${K8S_VERSION} in $((end - start))s:" >&2
print_paths
