"""Reservations in the view: read from pending pods' annotation, indexed by node, gone when the pod binds, ends
or is deleted; a bad annotation holds nothing and is named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from extender.view.store import ClusterView, Kind
from tests.builders import pod

KEY = "mig-extender.io/defrag-reservation"
GOOD = json.dumps(
    {"node": "gpu-a", "gpus": [1, 0], "started": "2026-01-01T00:00:00Z", "expires": "2026-01-01T00:10:00Z"}
)


def waiting(annotation: str | None, **changes: Any) -> dict[str, Any]:
    raw = pod("large", limits={"nvidia.com/mig-4g.40gb": 1}, namespace="ml")
    if annotation is not None:
        raw["metadata"]["annotations"] = {KEY: annotation}
    if "node" in changes:
        raw["spec"]["nodeName"] = changes["node"]
    if "phase" in changes:
        raw["status"]["phase"] = changes["phase"]
    return raw


def test_a_pending_pods_reservation_is_indexed_by_node_and_goes_when_it_binds_or_is_deleted() -> None:
    view = ClusterView()
    view.apply(Kind.PODS, "ADDED", waiting(GOOD))
    (held,) = view.reservations.on("gpu-a").values()
    assert (held.pod, held.node, held.gpus) == ("ml/large", "gpu-a", (0, 1))
    assert held.text() == "GPU 0, 1 of node gpu-a reserved for pod ml/large until 2026-01-01T00:10:00Z"
    view.apply(Kind.PODS, "MODIFIED", waiting(GOOD, node="gpu-a"))
    assert not view.reservations and not view.reservations.on("gpu-a")
    view.apply(Kind.PODS, "MODIFIED", waiting(GOOD))
    view.apply(Kind.PODS, "DELETED", waiting(GOOD))
    assert not view.reservations
    other = pod("other", limits={"nvidia.com/mig-1g.10gb": 1}, namespace="ml")
    view.replace(Kind.PODS, [waiting(GOOD), other])  # a re-list rebuilds the index
    assert view.reservations.of("uid-large") is not None
    view.annotate("uid-large", {KEY: None})  # the controller's own patch, applied to the view's copy
    assert not view.reservations


@pytest.mark.parametrize(
    ("annotation", "why"),
    [
        ("{", "not JSON"),
        ("[]", "must be a JSON object"),
        (json.dumps({"gpus": [0], "started": "2026-01-01T00:00:00Z", "expires": "2026-01-01T00:10:00Z"}), "node"),
        (json.dumps({"node": "a", "gpus": [-1], "started": "x", "expires": "y"}), "gpus"),
        (json.dumps({"node": "a", "gpus": [0], "started": "2026-01-01T00:00:00Z", "expires": "soon"}), "expires"),
    ],
)
def test_an_unreadable_reservation_holds_nothing_and_says_why(annotation: str, why: str) -> None:
    view = ClusterView()
    view.apply(Kind.PODS, "ADDED", waiting(annotation))
    assert not view.reservations
    assert why in view.reservations.invalid["ml/large"]
    view.apply(Kind.PODS, "DELETED", waiting(annotation))
    assert not view.reservations.invalid


def test_a_pod_that_ended_holds_nothing() -> None:
    view = ClusterView()
    view.apply(Kind.PODS, "ADDED", waiting(GOOD, phase="Failed"))
    assert not view.reservations
