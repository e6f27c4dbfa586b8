#!/usr/bin/env bash
# Build Karpenter's KWOK cloud provider controller (sigs.k8s.io/karpenter, kwok/) and the
# KWOK controller (sigs.k8s.io/kwok, cmd/kwok: the fake kubelet) from their Go modules,
# for running a real Karpenter against the local control plane of scripts/controlplane.py.
# The harness modules are scripts/karpenter-harness/ and scripts/karpenter-harness/kwok/.
#
# Output under ${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}/bin/karpenter-${KARPENTER_VERSION}/
#   karpenter-kwok     the Karpenter controller with the kwok cloud provider
#   kwok               the KWOK controller ${KWOK_VERSION}
#   crds/*.yaml        Karpenter's CRDs from the module (NodePool, NodeClaim, NodeOverlay,
#                      CapacityBuffer, KWOKNodeClass)
#   crds-aws/*.yaml    the AWS provider's EC2NodeClass CRD (github.com/aws/karpenter-provider-aws, same
#                      version, downloaded only, not built): manifests/karpenter is validated against it
#   kwok-stages.yaml   KWOK Stage config (fast node-initialize, node heartbeat, pod ready/
#                      complete/delete) from the kwok module, for `kwok --config`
# Needs only a Go toolchain and the Go module proxy; nothing is written into the repository.
# Idempotent: if everything exists it only prints the paths.
#
# Local patch: upstream Karpenter binds its metrics and health-probe listeners to ":<port>"
# (all interfaces) with no flag for the host. The build compiles a copy of the module
# (under the cache dir, never the module cache) whose pkg/operator/operator.go binds
# "127.0.0.1:<port>", selected by a `replace` in a temporary -modfile.
set -euo pipefail

KARPENTER_VERSION="v1.14.1"   # keep in sync with scripts/karpenter-harness/go.mod
KWOK_VERSION="v0.8.0"         # keep in sync with scripts/karpenter-harness/kwok/go.mod
HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/karpenter-harness" && pwd)"
CACHE_DIR="${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}"
BIN_DIR="${CACHE_DIR}/bin/karpenter-${KARPENTER_VERSION}"
SRC_DIR="${CACHE_DIR}/src/karpenter-${KARPENTER_VERSION}-loopback"
OUTPUTS=(karpenter-kwok kwok crds crds-aws kwok-stages.yaml)

print_paths() {
    for name in "${OUTPUTS[@]}"; do
        echo "${BIN_DIR}/${name}"
    done
}

all_present=1
for name in "${OUTPUTS[@]}"; do
    [[ -e "${BIN_DIR}/${name}" ]] || all_present=0
done
if [[ ${all_present} -eq 1 ]]; then
    echo "karpenter harness already built (delete ${BIN_DIR} to rebuild):" >&2
    print_paths
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "error: 'go' not found in PATH" >&2
    exit 1
fi

mkdir -p "${BIN_DIR}"
start=$(date +%s)
work="$(mktemp -d)"
trap 'rm -rf "${work}" "${BIN_DIR}"/.*.tmp.$$' EXIT

cd "${HARNESS_DIR}"
go mod download sigs.k8s.io/karpenter
MOD_DIR="$(go list -m -f '{{.Dir}}' sigs.k8s.io/karpenter)"
(cd kwok && go mod download sigs.k8s.io/kwok)
KWOK_DIR="$(cd kwok && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"

# Patched copy of the Karpenter module (listeners on loopback).
if [[ ! -f "${SRC_DIR}/.patched" ]]; then
    rm -rf "${SRC_DIR}"
    mkdir -p "$(dirname "${SRC_DIR}")"
    cp -r "${MOD_DIR}" "${SRC_DIR}.tmp.$$"
    chmod -R u+w "${SRC_DIR}.tmp.$$"
    op="${SRC_DIR}.tmp.$$/pkg/operator/operator.go"
    sed -i -e 's|BindAddress: fmt.Sprintf(":%d", |BindAddress: fmt.Sprintf("127.0.0.1:%d", |' \
        -e 's|HealthProbeBindAddress: fmt.Sprintf(":%d", |HealthProbeBindAddress: fmt.Sprintf("127.0.0.1:%d", |' "${op}"
    if [[ $(grep -c '"127.0.0.1:%d"' "${op}") -ne 2 ]]; then
        echo "error: could not patch the listen addresses in ${op} (upstream changed?)" >&2
        rm -rf "${SRC_DIR}.tmp.$$"
        exit 1
    fi
    touch "${SRC_DIR}.tmp.$$/.patched"
    mv "${SRC_DIR}.tmp.$$" "${SRC_DIR}"
fi
cp go.mod "${work}/go.mod"
cp go.sum "${work}/go.sum"
go mod edit -modfile="${work}/go.mod" -replace "sigs.k8s.io/karpenter=${SRC_DIR}"

echo "building karpenter-kwok ${KARPENTER_VERSION} ..." >&2
go build -buildvcs=false -trimpath -modfile="${work}/go.mod" \
    -ldflags="-s -w -X sigs.k8s.io/karpenter/pkg/operator.Version=${KARPENTER_VERSION}" \
    -o "${BIN_DIR}/.karpenter-kwok.tmp.$$" sigs.k8s.io/karpenter/kwok
mv -f "${BIN_DIR}/.karpenter-kwok.tmp.$$" "${BIN_DIR}/karpenter-kwok"

echo "building kwok ${KWOK_VERSION} ..." >&2
(cd kwok && go build -buildvcs=false -trimpath \
    -ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" \
    -o "${BIN_DIR}/.kwok.tmp.$$" sigs.k8s.io/kwok/cmd/kwok)
mv -f "${BIN_DIR}/.kwok.tmp.$$" "${BIN_DIR}/kwok"

mkdir -p "${BIN_DIR}/.crds.tmp.$$"
cp "${MOD_DIR}"/kwok/charts/crds/*.yaml "${MOD_DIR}"/kwok/apis/crds/*.yaml "${BIN_DIR}/.crds.tmp.$$/"
chmod -R u+w "${BIN_DIR}/.crds.tmp.$$"
rm -rf "${BIN_DIR}/crds"
mv "${BIN_DIR}/.crds.tmp.$$" "${BIN_DIR}/crds"

AWS_DIR="$(cd "${work}" && go mod download -json "github.com/aws/karpenter-provider-aws@${KARPENTER_VERSION}" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [[ ! -f "${AWS_DIR}/pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml" ]]; then
    echo "error: no EC2NodeClass CRD in github.com/aws/karpenter-provider-aws@${KARPENTER_VERSION} (${AWS_DIR})" >&2
    exit 1
fi
mkdir -p "${BIN_DIR}/.crds-aws.tmp.$$"
cp "${AWS_DIR}/pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml" "${BIN_DIR}/.crds-aws.tmp.$$/"
chmod -R u+w "${BIN_DIR}/.crds-aws.tmp.$$"
rm -rf "${BIN_DIR}/crds-aws"
mv "${BIN_DIR}/.crds-aws.tmp.$$" "${BIN_DIR}/crds-aws"

stages="${BIN_DIR}/.kwok-stages.tmp.$$"
: >"${stages}"
for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    { echo "---"; echo "# from sigs.k8s.io/kwok@${KWOK_VERSION} kustomize/stage/${f}"; grep -v '^---$' "${KWOK_DIR}/kustomize/stage/${f}"; } >>"${stages}"
done
mv -f "${stages}" "${BIN_DIR}/kwok-stages.yaml"

end=$(date +%s)
echo "built the karpenter harness in $((end - start))s:" >&2
print_paths
