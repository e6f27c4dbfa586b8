"""Answers reused across pods equal answers computed afresh, whatever changes in the view in between.

Two services, each over its own view loaded from the demo snapshot, get the same requests and the same view
changes; one computes every answer from scratch. Every filter and prioritize answer must be the same, and so
must the views' assumptions that the answers leave behind.
"""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender.metrics import Metrics
from extender.server.scheduling import SchedulingService
from extender.server.wire import host_priorities, parse_extender_args
from extender.settings import Settings
from extender.view.snapshot import load_snapshot
from extender.view.store import ClusterView, Kind
from tests.builders import pod
from tests.conftest import DEMO_SNAPSHOT
from tests.support import Clock

ITEMS = yaml.safe_load(DEMO_SNAPSHOT.read_text())["items"]
NODES = {i["metadata"]["name"]: i for i in ITEMS if i["kind"] == "Node"}
NAMES = sorted(NODES)
DEMANDS = ["1g.10gb", "3g.40gb", "7g.80gb", "1g.10gb:2", "2g.20gb"]


def service(clock: Clock, *, fresh: bool) -> tuple[ClusterView, SchedulingService]:
    view = ClusterView(clock=clock, assume_ttl_s=30.0)
    load_snapshot(view, str(DEMO_SNAPSHOT))
    s = Settings.of(host="127.0.0.1")
    scheduling = SchedulingService(view, s, Metrics(view), clock=clock)
    if fresh:  # every answer from scratch
        scheduling._answer_again = lambda demand, names: None  # type: ignore[method-assign]
        scheduling._remember_passed = lambda request, passed, passes: None  # type: ignore[method-assign]
        scheduling._host_priorities = lambda demand, names, scores: host_priorities(names, scores)  # type: ignore[method-assign]
    return view, scheduling


def mig_pod(index: int, demand: str) -> dict[str, Any]:
    profile, _, count = demand.partition(":")
    return pod(f"p{index}", limits={f"nvidia.com/mig-{profile}": count or "1"}, namespace="ml")


def body(the_pod: dict[str, Any], names: list[str]) -> bytes:
    return orjson.dumps({"Pod": the_pod, "NodeNames": names, "Nodes": None})


def bound_pod(index: int, node: str, demand: str) -> dict[str, Any]:
    raw = mig_pod(1000 + index, demand)
    raw["spec"]["nodeName"] = node
    raw["status"]["phase"] = "Running"
    return raw


# View changes between requests, applied to both views alike.
changes = st.one_of(
    st.tuples(st.just("bind"), st.sampled_from(NAMES), st.sampled_from(DEMANDS)),
    st.tuples(st.just("delete-node"), st.sampled_from(NAMES), st.just("")),
    st.tuples(st.just("restore-node"), st.sampled_from(NAMES), st.just("")),
    st.tuples(st.just("pending-pod"), st.just(""), st.sampled_from(DEMANDS)),
    st.tuples(st.just("relist"), st.just(""), st.just("")),
    st.tuples(st.just("time"), st.just(""), st.sampled_from(["5", "40"])),
)
requests = st.tuples(
    st.sampled_from(DEMANDS),
    st.sampled_from(["all", "some", "all"]),
    st.booleans(),  # retry an earlier pod rather than a new one
    st.booleans(),  # prioritize after the filter
    st.one_of(st.none(), changes),  # a change between the filter and the prioritize
)
steps = st.lists(st.one_of(requests, changes), min_size=1, max_size=30)


def apply(view: ClusterView, clock: Clock, change: tuple[str, str, str], step: int) -> None:
    kind, node, detail = change
    if kind == "bind":
        view.apply(Kind.PODS, "ADDED", bound_pod(step, node, detail))
    elif kind == "delete-node":
        view.apply(Kind.NODES, "DELETED", NODES[node])
    elif kind == "restore-node":
        view.apply(Kind.NODES, "ADDED", NODES[node])
    elif kind == "pending-pod":
        view.apply(Kind.PODS, "ADDED", mig_pod(2000 + step, detail))
    elif kind == "relist":
        view.replace(Kind.NODES, list(NODES.values()))
    elif kind == "time":
        clock.now += float(detail)


@given(steps)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_reused_answers_equal_fresh_ones(sequence: list[tuple[Any, ...]]) -> None:
    clock = Clock()
    (view, reusing), (fresh_view, fresh) = service(clock, fresh=False), service(clock, fresh=True)
    for step, item in enumerate(sequence):
        if len(item) == 3:  # a change
            apply(view, clock, item, step)
            apply(fresh_view, clock, item, step)
            continue
        demand, which, retry, then_prioritize, between = item
        names = NAMES if which == "all" else NAMES[::2]
        the_pod = mig_pod(0 if retry else step, demand)
        request = body(the_pod, names)
        answer = orjson.loads(orjson.dumps(reusing.filter_encoded(parse_extender_args(request))))  # as served
        assert answer == orjson.loads(orjson.dumps(fresh.filter(parse_extender_args(request)))), (
            f"filter at step {step}"
        )
        if then_prioritize and answer["NodeNames"]:
            if between is not None:
                apply(view, clock, between, step)
                apply(fresh_view, clock, between, step)
            request = body(the_pod, answer["NodeNames"])
            scores = orjson.loads(orjson.dumps(reusing.prioritize(parse_extender_args(request))))
            assert scores == fresh.prioritize(parse_extender_args(request)), f"prioritize at step {step}"
        assert view._assumed_on_node == fresh_view._assumed_on_node, f"assumptions at step {step}"
