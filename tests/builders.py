"""Fluent builders for GPU/node states and pods, shared by the tests (after kube-scheduler's st.MakePod())."""

from __future__ import annotations

from typing import Any

from extender.model.catalog import model_named
from extender.model.layouts import layout_text
from extender.model.placement import Placement
from extender.model.state import Fidelity, GpuState, Instance, NodeState


def gpu(model: str, layout: str = "", *, used: str = "", index: int = 0, dynamic: bool = False) -> GpuState:
    """``gpu("A100-40GB", "3g.20gb@0 1g.5gb@4", used="3g.20gb@0")``: instances by ``profile@start``."""
    m = model_named(model)
    used_set = set(used.split())
    instances = []
    for token in layout.split():
        name, _, start = token.partition("@")
        instances.append(Instance(Placement(int(start), m.profile(name)), token in used_set))
    unknown = used_set - set(layout.split())
    assert not unknown, f"used instances {unknown} not in layout"
    return GpuState(index, m, tuple(instances), dynamic=dynamic)


def node(name: str, *gpus: GpuState, fidelity: Fidelity = Fidelity.EXACT) -> NodeState:
    numbered = tuple(
        GpuState(i, g.model, g.instances, g.dynamic, g.mig_enabled, g.whole_gpu_used) for i, g in enumerate(gpus)
    )
    return NodeState(name, numbered, fidelity)


def text(gpu_state: GpuState) -> str:
    return layout_text([i.placement for i in gpu_state.instances])


def pod(
    name: str = "p",
    *,
    requests: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    init: list[dict[str, Any]] | None = None,
    namespace: str = "default",
    node_name: str | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox", "resources": resources}]}
    if init:
        spec["initContainers"] = init
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}"},
        "spec": spec,
        "status": {"phase": "Pending"},
    }
