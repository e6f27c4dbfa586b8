"""Pod demand by the Kubernetes effective-request rule."""

from __future__ import annotations

from typing import Any

import pytest

from extender.model.demand import DemandError, PodDemand, pod_demand
from tests.builders import pod


def _container(requests: dict[str, Any], restart: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "c", "resources": {"requests": requests}}
    if restart:
        c["restartPolicy"] = restart
    return c


@pytest.mark.parametrize(
    ("the_pod", "expected"),
    [
        (pod(requests={"nvidia.com/mig-1g.10gb": "1"}), PodDemand(mig=(("1g.10gb", 1),))),
        # an extended resource given only as a limit is requested at the limit
        (pod(limits={"nvidia.com/mig-3g.40gb": 2}), PodDemand(mig=(("3g.40gb", 2),))),
        (pod(requests={"cpu": "1", "nvidia.com/gpu": "2"}), PodDemand(gpus=2)),
        (pod(requests={"cpu": "1"}), PodDemand()),
        # init containers: max(sum of containers, each init container) = max(1, 2) = 2
        (
            pod(requests={"nvidia.com/mig-1g.10gb": 1}, init=[_container({"nvidia.com/mig-1g.10gb": 2})]),
            PodDemand(mig=(("1g.10gb", 2),)),
        ),
        # a sidecar (restartable init container) adds to the containers: 1 + 1 = 2
        (
            pod(
                requests={"nvidia.com/mig-1g.10gb": 1},
                init=[_container({"nvidia.com/mig-1g.10gb": 1}, restart="Always")],
            ),
            PodDemand(mig=(("1g.10gb", 2),)),
        ),
        # an init container after a sidecar needs its own plus the sidecar's: max(1+1, 2+1) = 3
        (
            pod(
                requests={"nvidia.com/mig-1g.10gb": 1},
                init=[
                    _container({"nvidia.com/mig-1g.10gb": 1}, restart="Always"),
                    _container({"nvidia.com/mig-1g.10gb": 2}),
                ],
            ),
            PodDemand(mig=(("1g.10gb", 3),)),
        ),
        (pod(requests={"nvidia.com/mig-1g.10gb": "0"}), PodDemand()),
    ],
    ids=["request", "limit-only", "whole-gpus", "no-gpu", "init", "sidecar", "init-after-sidecar", "zero"],
)
def test_effective_demand(the_pod: dict[str, Any], expected: PodDemand) -> None:
    assert pod_demand(the_pod) == expected


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ({"nvidia.com/mig-1g.10gb": "500m"}, r"spec.containers\[0\].resources.requests\[nvidia.com/mig-1g.10gb\]"),
        ({"nvidia.com/mig-1g.10gb": 1.5}, "not a whole number"),
        ({"nvidia.com/mig-1g.10gb": -1}, r"outside 0..1024"),
        ({"nvidia.com/mig-1g.10gb": True}, "not a whole number"),
        ({"nvidia.com/gpu": "99999999999"}, r"outside 0..1024"),
        ({"nvidia.com/mig-" + "1g" * 40: "1"}, "resource name 'nvidia.com/mig-1g1g.*is too long"),
    ],
)
def test_bad_quantities_name_the_container_and_value(requests: dict[str, Any], message: str) -> None:
    with pytest.raises(DemandError, match=message):
        pod_demand(pod(requests=requests))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"spec": []}, "spec is not an object"),
        ({"spec": {"containers": {}}}, "spec.containers is not a list"),
        ({"spec": {"containers": [{"resources": {"requests": []}}]}}, r"resources.requests is not an object"),
    ],
)
def test_malformed_pods(body: dict[str, Any], message: str) -> None:
    with pytest.raises(DemandError, match=message):
        pod_demand(body)


def test_demand_text_is_stable() -> None:
    assert PodDemand(mig=(("1g.10gb", 2), ("3g.40gb", 1))).text() == "2x 1g.10gb + 1x 3g.40gb"
