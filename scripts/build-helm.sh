#!/usr/bin/env bash
# Build Helm (helm.sh/helm/v4 v4.3.1) and kustomize (sigs.k8s.io/kustomize/kustomize/v5 v5.8.2) from their Go
# modules, for the chart tests (tests/helm/, tests/e2e/test_helm.py): `helm lint`, `helm template`, `helm install`
# into the local control plane, and the check that the chart renders what the kustomize overlays render. Also
# copies the ServiceMonitor and PrometheusRule CRDs out of the Prometheus Operator's Go module
# (github.com/prometheus-operator/prometheus-operator v0.85.0, example/prometheus-operator-crd/), so that the
# chart's monitoring objects are validated by the real API server.
#
# Output: ${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}/bin/helm-v4.3.1/helm
#         ${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}/bin/kustomize-v5.8.2/kustomize
#         ${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}/bin/prometheus-operator-crds-v0.85.0/*.yaml
# Each is built with `go install <module>@<version>`, so with the module's own go.mod (the dependency versions
# its release was tested with), nothing written into the repository. Needs only Go (>= 1.26) and the Go module
# proxy. Idempotent: a binary already built is kept. A cold build takes a few minutes on a small machine.
#
# Helm 4, not 3: it is the current major; Helm 3 had its last, limited minor release on 2026-09-09 and gets
# security fixes only until 2027-02-10 (helm.sh blog, "Helm 3 End of Life"). The chart (apiVersion v2) installs
# with either. Helm 4 applies with server-side apply by default, which the install tests exercise against the
# real API server.
set -euo pipefail

HELM_VERSION="v4.3.1"
KUSTOMIZE_VERSION="v5.8.2"
CACHE_DIR="${MIG_EXTENDER_CACHE:-$HOME/.cache/mig-extender}"
HELM_DIR="${CACHE_DIR}/bin/helm-${HELM_VERSION}"
KUSTOMIZE_DIR="${CACHE_DIR}/bin/kustomize-${KUSTOMIZE_VERSION}"
PROMETHEUS_OPERATOR_VERSION="v0.85.0"
CRD_DIR="${CACHE_DIR}/bin/prometheus-operator-crds-${PROMETHEUS_OPERATOR_VERSION}"
CRDS=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)

print_paths() {
    echo "${HELM_DIR}/helm"
    echo "${KUSTOMIZE_DIR}/kustomize"
    for crd in "${CRDS[@]}"; do echo "${CRD_DIR}/${crd}"; done
}

all_present=1
[[ -x "${HELM_DIR}/helm" && -x "${KUSTOMIZE_DIR}/kustomize" ]] || all_present=0
for crd in "${CRDS[@]}"; do [[ -f "${CRD_DIR}/${crd}" ]] || all_present=0; done
if [[ ${all_present} -eq 1 ]]; then
    echo "helm, kustomize and the monitoring CRDs already there (delete ${HELM_DIR}, ${KUSTOMIZE_DIR} or ${CRD_DIR} to rebuild):" >&2
    print_paths
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "error: 'go' not found in PATH (Go >= 1.26 is required)" >&2
    exit 1
fi

# go install writes into a temporary GOBIN that is renamed into place, so an interrupted build never leaves a
# truncated binary that the check above would accept. Run outside any module: `go install pkg@version` then
# resolves with the module's own go.mod only.
work="$(mktemp -d "${CACHE_DIR}/.build-helm.XXXXXX" 2>/dev/null || { mkdir -p "${CACHE_DIR}" && mktemp -d "${CACHE_DIR}/.build-helm.XXXXXX"; })"
trap 'rm -rf "${work}"' EXIT
start=$(date +%s)

install() { # install <module path>@<version> <binary> <dest dir> <ldflags>
    [[ -x "$3/$2" ]] && return 0
    echo "building $2 ($1) ..." >&2
    (cd "${work}" && GOBIN="${work}/bin" GOFLAGS=-buildvcs=false go install -trimpath -ldflags="$4" "$1")
    mkdir -p "$3"
    mv -f "${work}/bin/$2" "$3/$2"
}

# The -X flags stamp the release version, as Helm's Makefile does (`helm version` otherwise says v4.3).
install "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}" helm "${HELM_DIR}" \
    "-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}" kustomize "${KUSTOMIZE_DIR}" "-s -w"

missing=0
for crd in "${CRDS[@]}"; do [[ -f "${CRD_DIR}/${crd}" ]] || missing=1; done
if [[ ${missing} -eq 1 ]]; then
    echo "copying the monitoring CRDs of prometheus-operator ${PROMETHEUS_OPERATOR_VERSION} ..." >&2
    mod_dir="$(cd "${work}" && go mod download -json "github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    mkdir -p "${work}/crds"
    for crd in "${CRDS[@]}"; do
        if [[ ! -f "${mod_dir}/example/prometheus-operator-crd/${crd}" ]]; then
            echo "error: no ${crd} in prometheus-operator@${PROMETHEUS_OPERATOR_VERSION} (${mod_dir})" >&2
            exit 1
        fi
        cp "${mod_dir}/example/prometheus-operator-crd/${crd}" "${work}/crds/"
    done
    chmod -R u+w "${work}/crds"
    rm -rf "${CRD_DIR}"
    mv "${work}/crds" "${CRD_DIR}"
fi

end=$(date +%s)
echo "built helm and kustomize, copied the CRDs in $((end - start))s:" >&2
print_paths
