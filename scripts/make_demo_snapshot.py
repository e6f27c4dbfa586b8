"""Write ``examples/demo-cluster.yaml``: a small mixed MIG fleet as ``kubectl get ... -o yaml`` prints it.

    python scripts/make_demo_snapshot.py [--out examples/demo-cluster.yaml]

Nodes carry GPU Feature Discovery labels, ``nvidia.com/mig.config`` and allocatable counts consistent
with the mig-parted config, as a GPU Operator cluster shows them; pods are bound with ``spec.nodeName``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from extender.model.catalog import model_named
from extender.model.migparted import DEFAULT_CONFIG, parse_config

MIG_PARTED = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-balanced:
    - devices: all
      device-filter: ["0x20B010DE", "0x20B110DE", "0x20F110DE", "0x20F610DE"]
      mig-enabled: true
      mig-devices: {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}
    - devices: all
      device-filter: ["0x233010DE", "0x233110DE", "0x232210DE"]
      mig-enabled: true
      mig-devices: {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
    - devices: all
      device-filter: ["0x233510DE", "0x233B10DE"]
      mig-enabled: true
      mig-devices: {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1}
  all-1g.5gb:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.5gb": 7}
  all-3g.40gb:
    - devices: all
      mig-enabled: true
      mig-devices: {"3g.40gb": 2}
  all-7g.80gb:
    - devices: all
      mig-enabled: true
      mig-devices: {"7g.80gb": 1}
  inference-h100:
    - devices: [0, 1, 2, 3]
      mig-enabled: true
      mig-devices: {"1g.10gb": 7}
    - devices: [4, 5, 6, 7]
      mig-enabled: true
      mig-devices: {"3g.40gb": 2}
"""

CONFIG = parse_config(MIG_PARTED)


def node(
    name: str,
    product: str,
    *,
    config: str | None = None,
    gpus: int = 8,
    dynamic: bool = False,
    annotation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    model = model_named(product)
    labels = {
        "kubernetes.io/hostname": name,
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "mixed",
    }
    allocatable: dict[str, str] = {"cpu": "96", "memory": "1Ti", "pods": "110", "ephemeral-storage": "1Ti"}
    if dynamic:
        labels["mig-extender.io/mode"] = "dynamic"
    if config:
        labels["nvidia.com/mig.config"] = config
        labels["nvidia.com/mig.config.state"] = "success"
        counts: Counter[str] = Counter()
        for index in range(gpus):
            spec = (CONFIG if config in CONFIG.configs else DEFAULT_CONFIG).resolve(config, model, index)
            assert spec is not None
            for placement in spec.layout(model):
                counts[placement.profile.resource_name] += 1
        allocatable.update({k: str(v) for k, v in sorted(counts.items())})
    metadata: dict[str, Any] = {"name": name, "labels": labels, "resourceVersion": "1"}
    if annotation is not None:
        metadata["annotations"] = {"mig-extender.io/gpus": json.dumps(annotation, separators=(",", ":"))}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": metadata,
        "spec": {},
        "status": {
            "capacity": dict(allocatable),
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def pod(name: str, resource: str, count: int = 1, node_name: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": "mig-scheduler",
        "containers": [
            {
                "name": "main",
                "image": "nvcr.io/nvidia/cuda:12.6.0-base-ubuntu22.04",
                "resources": {"limits": {resource: str(count)}},
            }
        ],
    }
    status: dict[str, Any] = {"phase": "Running" if node_name else "Pending"}
    if node_name:
        spec["nodeName"] = node_name
    else:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": spec,
        "status": status,
    }


def build() -> dict[str, Any]:
    exact = {
        "version": "v1",
        "gpus": [
            {
                "index": i,
                "product": "NVIDIA-H100-80GB-HBM3",
                "mode": "static",
                "migEnabled": True,
                "instances": [
                    {"profile": "3g.40gb", "start": 0, "size": 4, "used": i < 2},
                    {"profile": "2g.20gb", "start": 4, "size": 2, "used": False},
                    {"profile": "1g.10gb", "start": 6, "size": 1, "used": i == 0},
                ],
            }
            for i in range(4)
        ],
    }
    nodes = [
        node("a100-balanced", "NVIDIA-A100-SXM4-40GB", config="all-balanced"),
        node("a100-small", "NVIDIA-A100-SXM4-40GB", config="all-1g.5gb"),
        node("h100-balanced", "NVIDIA-H100-80GB-HBM3", config="all-balanced"),
        node("h100-inference", "NVIDIA-H100-80GB-HBM3", config="inference-h100"),
        node("h100-idle-3g", "NVIDIA-H100-80GB-HBM3", config="all-3g.40gb"),
        node("h100-exact", "NVIDIA-H100-80GB-HBM3", gpus=4, annotation=exact),
        node("h200-balanced", "NVIDIA-H200", config="all-balanced"),
        node("h200-dynamic", "NVIDIA-H200", dynamic=True),
    ]
    pods = [
        pod("chat-1", "nvidia.com/mig-1g.5gb", node_name="a100-balanced"),
        pod("chat-2", "nvidia.com/mig-3g.20gb", node_name="a100-balanced"),
        *(pod(f"embed-{i}", "nvidia.com/mig-1g.5gb", node_name="a100-small") for i in range(20)),
        pod("vision-1", "nvidia.com/mig-3g.40gb", node_name="h100-balanced"),
        pod("vision-2", "nvidia.com/mig-2g.20gb", node_name="h100-balanced"),
        *(pod(f"asr-{i}", "nvidia.com/mig-1g.10gb", node_name="h100-inference") for i in range(12)),
        pod("llm-1", "nvidia.com/mig-3g.71gb", node_name="h200-balanced"),
        pod("llm-2", "nvidia.com/mig-3g.71gb", 2, node_name="h200-dynamic"),
        pod("train-big", "nvidia.com/mig-7g.80gb"),  # pending: an idle H100 could be re-partitioned
        pod("train-huge", "nvidia.com/mig-7g.141gb", 9),  # pending: no node shape can host 9 full H200s
    ]
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "default-mig-parted-config", "namespace": "gpu-operator", "resourceVersion": "1"},
        "data": {"config.yaml": MIG_PARTED},
    }
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [*nodes, *pods, config_map],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="examples/demo-cluster.yaml")
    args = parser.parse_args()
    text = "# Generated by scripts/make_demo_snapshot.py: a mixed MIG fleet for `mig-extender serve --snapshot`.\n"
    text += yaml.safe_dump(build(), sort_keys=False, width=120)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
