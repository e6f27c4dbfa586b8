"""The chart, Helm and kustomize as the chart tests use them: rendering, normalising, the values combinations.

Helm and kustomize are built from their Go modules by ``scripts/build-helm.sh`` (cached under
``~/.cache/mig-extender/bin``); :func:`tools` builds them on first use, like the control plane's fixture does.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "manifests" / "helm" / "mig-extender"
HELM_VERSION = "v4.3.1"
KUSTOMIZE_VERSION = "v5.8.2"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
KUBE_VERSION = "v1.36.3"
"""The control plane's version (scripts/controlplane.py): what ``helm template`` takes the cluster to run."""
RELEASE = "mig-extender"
NAMESPACE = "mig-extender"

HELM_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
)
"""Labels Helm charts add by convention; the kustomize overlays have none of them."""

Doc = dict[str, Any]


def cache_dir() -> Path:
    cache = os.environ.get("MIG_EXTENDER_CACHE")
    return (Path(cache) if cache else Path.home() / ".cache" / "mig-extender") / "bin"


@dataclass(frozen=True)
class Tools:
    helm: Path
    kustomize: Path
    crds: Path
    """The ServiceMonitor and PrometheusRule CRDs of the Prometheus Operator."""


def tools() -> Tools:
    """The built binaries; ``scripts/build-helm.sh`` runs first if one is missing."""
    found = Tools(
        cache_dir() / f"helm-{HELM_VERSION}" / "helm",
        cache_dir() / f"kustomize-{KUSTOMIZE_VERSION}" / "kustomize",
        cache_dir() / f"prometheus-operator-crds-{PROMETHEUS_OPERATOR_VERSION}",
    )
    if not (found.helm.is_file() and found.kustomize.is_file() and found.crds.is_dir()):
        subprocess.run(["bash", str(ROOT / "scripts" / "build-helm.sh")], check=True, timeout=3600)
    return found


def helm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``helm`` with its own config, cache and data directories (nothing from the user's home)."""
    home = ROOT / ".pytest_cache" / "helm-home"
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    result = subprocess.run(
        [str(tools().helm), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def set_args(values: Mapping[str, Any]) -> list[str]:
    """``--set-json`` arguments for ``values`` (dotted keys), so that types survive."""
    import json

    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def template(values: Mapping[str, Any] = {}, *, kube_version: str = KUBE_VERSION) -> list[Doc]:
    """The chart rendered by ``helm template`` for the release mig-extender in the namespace mig-extender."""
    out = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube_version, *set_args(values)
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def load_generator() -> ModuleType:
    """scripts/gen_manifests.py as a module (its CHART_MANAGED table)."""
    spec = importlib.util.spec_from_file_location("gen_manifests_for_chart", ROOT / "scripts" / "gen_manifests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def kustomize(overlay: str | Path) -> list[Doc]:
    """``kustomize build`` of a directory under manifests/ (or of a directory given by its path)."""
    directory = overlay if isinstance(overlay, Path) else ROOT / "manifests" / overlay
    result = subprocess.run(
        [str(tools().kustomize), "build", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize build {overlay}: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def key(doc: Doc) -> str:
    meta = doc["metadata"]
    return f"{doc['kind']} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " ")


def _strip(node: Any) -> Any:
    """``node`` without Helm's labels (wherever a label map is) and without checksum annotations."""
    if isinstance(node, dict):
        out = {}
        for name, value in node.items():
            if name in HELM_LABELS or (isinstance(name, str) and name.startswith("checksum/")):
                continue
            out[name] = _strip(value)
        if "annotations" in out and out["annotations"] == {}:
            del out["annotations"]
        return out
    if isinstance(node, list):
        return [_strip(item) for item in node]
    return node


def normalise(doc: Doc) -> Doc:
    """What the comparison looks at: Helm's labels and checksum annotations dropped, a ConfigMap's YAML or JSON
    data parsed (the kustomize files carry comments in them, the chart's do not)."""
    out: Doc = _strip(doc)
    if out["kind"] == "ConfigMap":
        out["data"] = {name: yaml.safe_load(text) for name, text in out.get("data", {}).items()}
    return out


def by_key(docs: Sequence[Doc]) -> dict[str, Doc]:
    keyed = {key(doc): normalise(doc) for doc in docs}
    assert len(keyed) == len(docs), "two objects of the same kind, namespace and name"
    return keyed


# --- the values combinations ---------------------------------------------------------------------------------

TLS_SECRET = "mig-extender-tls"
CLIENT_SECRET = "kube-scheduler-mig-extender-client"
POOLS = [
    {"nodePool": "p4d-a100-40gb", "gpu": "NVIDIA-A100-SXM4-40GB", "gpusPerNode": 8, "migConfig": "all-balanced"},
    {
        "nodePool": "p5-h100-80gb",
        "gpu": "NVIDIA-H100-80GB-HBM3",
        "gpusPerNode": 8,
        "migConfig": "all-balanced",
        "cost": 2.0,
        "maxNodes": 2,
    },
]
NETWORK = {"controlPlaneCIDRs": ["10.0.0.0/24", "10.244.0.0/16"], "apiServerCIDRs": ["10.0.0.10/32"]}


@dataclass(frozen=True)
class Combination:
    """One documented way to install the chart: values for ``--set-json``."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)


AXES: dict[str, dict[str, dict[str, Any]]] = {
    "mode": {"extender": {"mode": "extender"}, "secondary": {"mode": "secondary-scheduler"}},
    "tls": {
        "plain": {},
        "tls": {
            "tls.enabled": True,
            "tls.secretName": TLS_SECRET,
            "tls.clientAuth": True,
            "tls.clientSecretName": CLIENT_SECRET,
        },
    },
    "replicas": {
        "ha": {},
        "single": {
            "extender.replicas": 1,
            "secondaryScheduler.replicas": 1,
            "secondaryScheduler.leaderElection": False,
            "leaderElection.enabled": False,
        },
    },
    "relayout": {"relayout-off": {}, "relayout-on": {"relayout.mode": "on"}},
    "provisioning": {
        "provisioning-off": {},
        "provisioning-requests": {"provisioning.mode": "requests", "provisioning.pools": POOLS},
    },
    "monitoring": {
        "no-monitoring": {},
        "monitoring": {"serviceMonitor.enabled": True, "prometheusRule.enabled": True, "dashboard.enabled": True},
    },
    "network": {
        "no-networkpolicy": {},
        "networkpolicy": {"networkPolicy.enabled": True, **{f"networkPolicy.{k}": v for k, v in NETWORK.items()}},
    },
}
"""Each documented value, on and off. The combinations are their product (128)."""


def combinations() -> Iterator[Combination]:
    for choice in itertools.product(*(axis.items() for axis in AXES.values())):
        values: dict[str, Any] = {}
        for _, part in choice:
            values.update(part)
        yield Combination("-".join(name for name, _ in choice), values)
