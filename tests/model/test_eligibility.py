"""Which nodes a pod may use (issue 25, item 3): taints, cordons, nodeSelector and required node affinity.

The tables mirror upstream: k8s.io/api ``core/v1/toleration_test.go`` (``TestTolerationToleratesTaint``) and
k8s.io/component-helpers ``scheduling/corev1/nodeaffinity/nodeaffinity_test.go``. The scan tests fail on the code
before this change: the verdict named a tainted, cordoned or unselected node as the one the pod fits on.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from extender.metrics import Metrics
from extender.model.demand import PodDemand
from extender.model.eligibility import ANYWHERE, PodPlacement, Requirement, Taint, Term, Toleration
from extender.model.policy import PolicyConfig
from extender.model.relayout import plan_relayouts
from extender.notify.annotator import VERDICT, Annotator
from extender.notify.writers import LogWriter
from extender.view.objects import NodeInfo, PodInfo
from extender.view.store import ClusterView, Kind
from tests.builders import gpu, node, pod
from tests.support import Clock

TAINT = Taint("foo", "bar", "NoSchedule")


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        (Toleration("foo", "Equal", "bar", "NoSchedule"), TAINT, True),
        (Toleration("foo", "Equal", "bar", ""), TAINT, True),  # empty effect matches all effects
        (Toleration("foo", "Equal", "bar", "NoExecute"), TAINT, False),
        (Toleration("foo", "Equal", "baz", "NoSchedule"), TAINT, False),
        (Toleration("foo", "", "bar", "NoSchedule"), TAINT, True),  # empty operator is Equal
        (Toleration("foo", "Exists", "", "NoSchedule"), TAINT, True),
        (Toleration("", "Exists", "", ""), TAINT, True),  # empty key with Exists tolerates everything
        (Toleration("", "Exists", "", "NoExecute"), TAINT, False),
        (Toleration("other", "Exists", "", ""), TAINT, False),
        (Toleration("foo", "Lt", "bar", ""), TAINT, False),  # unknown operator
    ],
)
def test_tolerations_tolerate_taints_as_kubernetes_does(toleration: Toleration, taint: Taint, tolerated: bool) -> None:
    assert toleration.tolerates(taint) is tolerated


LABELS = {"zone": "a", "gpus": "8", "pool": "mig", "slots": "5_000", "sign": "+9"}


@pytest.mark.parametrize(
    ("requirement", "matches"),
    [
        (Requirement("zone", "In", ("a", "b")), True),
        (Requirement("zone", "In", ("b",)), False),
        (Requirement("zone", "NotIn", ("b",)), True),
        (Requirement("missing", "NotIn", ("b",)), True),  # NotIn matches an absent key
        (Requirement("zone", "Exists"), True),
        (Requirement("missing", "Exists"), False),
        (Requirement("missing", "DoesNotExist"), True),
        (Requirement("gpus", "Gt", ("4",)), True),
        (Requirement("gpus", "Lt", ("4",)), False),
        (Requirement("zone", "Gt", ("4",)), False),  # not an integer
        (Requirement("slots", "Gt", ("4",)), False),  # Go's ParseInt refuses "5_000", Python's int() does not
        (Requirement("gpus", "Gt", ("4 ",)), False),  # nor spaces
        (Requirement("sign", "Gt", ("-4",)), True),  # signs are digits' company in both
        (Requirement("metadata.name", "In", ("n1",), field=True), True),
        (Requirement("metadata.name", "NotIn", ("n1",), field=True), False),
        (Requirement("metadata.uid", "In", ("n1",), field=True), False),  # only metadata.name is a field
    ],
)
def test_node_selector_requirements(requirement: Requirement, matches: bool) -> None:
    assert requirement.matches(LABELS, "n1") is matches


def test_terms_are_ored_and_their_requirements_anded() -> None:
    wrong_zone = Term((Requirement("zone", "In", ("b",)), Requirement("pool", "In", ("mig",))))
    right = Term((Requirement("zone", "In", ("a",)), Requirement("pool", "In", ("mig",))))
    assert not PodPlacement(required_terms=(wrong_zone,)).admits(LABELS, "n1", (), False)
    assert PodPlacement(required_terms=(wrong_zone, right)).admits(LABELS, "n1", (), False)
    assert not PodPlacement(required_terms=(Term(()),)).admits(LABELS, "n1", (), False)  # an empty term: none
    assert not PodPlacement(required_terms=()).admits(LABELS, "n1", (), False)  # no terms: no node


def test_taints_cordons_and_selectors() -> None:
    assert not ANYWHERE.admits({}, "n", (TAINT,), False)
    assert ANYWHERE.admits({}, "n", (Taint("foo", "bar", "PreferNoSchedule"),), False)  # does not filter
    assert not ANYWHERE.admits({}, "n", (), True)  # cordoned
    cordon = Toleration("node.kubernetes.io/unschedulable", "Exists", "", "NoSchedule")
    assert PodPlacement(tolerations=(cordon,)).admits({}, "n", (), True)
    assert PodPlacement(node_selector=(("zone", "a"),)).admits(LABELS, "n", (), False)
    assert not PodPlacement(node_selector=(("zone", "a"), ("pool", "other"))).admits(LABELS, "n", (), False)


def _raw_node(name: str, *, taints: list[dict[str, str]] | None = None, cordoned: bool = False) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": "1",
            "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "zone": name},
        },
        "spec": {"taints": taints or [], "unschedulable": cordoned},
        "status": {"allocatable": {"nvidia.com/mig-1g.10gb": "7"}},
    }


def test_a_taint_whose_effect_is_not_a_string_is_no_filtering_taint() -> None:
    info = NodeInfo.from_raw(_raw_node("a", taints=[{"key": "k", "effect": ["NoSchedule"]}, {"effect": {}}]))  # type: ignore[list-item]
    assert info.taints == ()


def test_objects_keep_what_decides_eligibility() -> None:
    info = NodeInfo.from_raw(
        _raw_node("a", taints=[{"key": "k", "effect": "NoExecute"}, {"key": "p", "effect": "PreferNoSchedule"}])
    )
    assert info.taints == (Taint("k", "", "NoExecute"),) and info.labels["zone"] == "a"
    raw = pod("p", limits={"nvidia.com/mig-1g.10gb": 1})
    raw["spec"]["tolerations"] = [{"key": "k", "operator": "Exists"}]
    raw["spec"]["nodeSelector"] = {"zone": "a"}
    raw["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
            }
        }
    }
    first, second = PodInfo.from_raw(raw), PodInfo.from_raw({**raw, "metadata": {"name": "q", "uid": "q"}})
    assert first.placement is second.placement  # pods with equal placements share one object
    assert info.admits(first.placement) and not info.admits(ANYWHERE)
    assert PodInfo.from_raw(pod("plain")).placement is ANYWHERE


async def _verdict_of(pod_spec: dict[str, Any], *nodes: dict[str, Any]) -> tuple[str | None, str | None]:
    view = ClusterView(clock=Clock())
    raw = pod("waiting", limits={"nvidia.com/mig-1g.10gb": 1})
    raw["spec"].update(pod_spec)
    view.replace(Kind.NODES, nodes)
    view.replace(Kind.PODS, [raw])
    view.replace(Kind.CONFIG, [])
    moment = datetime.datetime(2026, 11, 28, tzinfo=datetime.UTC)
    annotator = Annotator(
        view, LogWriter(view), Metrics(view), policy=PolicyConfig(), rate=1000, scan_interval_s=1, now=lambda: moment
    )
    await annotator.scan_once()
    waiting = view.pods["uid-waiting"]
    verdict = annotator.verdict_for(waiting)
    # what the pod was told: a verdict annotation unless it fits (the node is only in the verdict itself)
    assert waiting.annotations.get(VERDICT) == (
        None if verdict is None or verdict.verdict == "fits" else verdict.verdict
    )
    return (str(verdict.verdict), verdict.node) if verdict else (None, None)


NO_SCHEDULE = [{"key": "dedicated", "value": "infer", "effect": "NoSchedule"}]


async def test_the_verdict_scan_names_only_nodes_the_pod_may_use() -> None:
    tainted, cordoned, open_node = _raw_node("t", taints=NO_SCHEDULE), _raw_node("c", cordoned=True), _raw_node("o")
    # Before: "fits" on the tainted or cordoned node, where kube-scheduler never places the pod.
    assert await _verdict_of({}, tainted, cordoned) == ("no-layout-fits", None)
    assert await _verdict_of({}, tainted, cordoned, open_node) == ("fits", "o")
    tolerating = {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infer", "effect": "NoSchedule"}]}
    assert await _verdict_of(tolerating, tainted, cordoned) == ("fits", "t")
    assert await _verdict_of({"nodeSelector": {"zone": "elsewhere"}}, open_node) == ("no-layout-fits", None)
    assert await _verdict_of({"nodeSelector": {"zone": "o"}}, tainted, open_node) == ("fits", "o")


def test_relayout_plans_use_only_nodes_the_demand_may_use() -> None:
    idle = [node(f"n{i}", gpu("H100-80GB", "7g.80gb@0")) for i in range(2)]
    demand = PodDemand(mig=(("1g.10gb", 1),))
    (plan,) = plan_relayouts(idle, [demand], {"1g": 1.0})
    assert plan.node == "n0"
    (plan,) = plan_relayouts(idle, [demand], {"1g": 1.0}, usable=[{"n1"}])
    assert plan.node == "n1"
    assert plan_relayouts(idle, [demand], {"1g": 1.0}, usable=[set()]) == []
