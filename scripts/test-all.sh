#!/usr/bin/env bash
# Sets up and runs every check: ruff, mypy --strict, the import-layer contracts, and the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Everything below runs from the project's own virtualenv (tools, pytest and the subprocesses tests start).
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy --strict extender"; mypy extender
echo "== import layers"; lint-imports
echo "== control plane binaries (kube-apiserver, kube-scheduler, kube-controller-manager, etcd from Go modules; cached)"
bash scripts/build-control-plane.sh
echo "== the same for Kubernetes v1.37.2, for tests/e2e/test_dra.py (each DRA test also runs on 1.37); cached"
bash scripts/build-control-plane.sh v1.37.2
echo "== Karpenter (kwok provider) and KWOK from Go modules, for tests/e2e/test_karpenter.py; cached"
bash scripts/build-karpenter.sh
echo "== Helm and kustomize from Go modules, the monitoring CRDs, for tests/helm and tests/e2e/test_helm.py; cached"
bash scripts/build-helm.sh
echo "== DRA allocator reference (k8s.io/dynamic-resource-allocation v0.36.3), for tests/model/dra; cached"
bash scripts/build-dra-reference.sh
echo "== Prometheus (Debian package, for tests/prometheus)"; bash scripts/install-prometheus.sh
echo "== buildah and mmdebstrap (Debian packages, for tests/image)"; bash scripts/install-image-tools.sh
# -rs: every skipped test's reason in the summary (e.g. tests/image where the builder cannot run).
echo "== pytest"; python -m pytest -q -rs "$@"
