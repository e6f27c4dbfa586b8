"""Fragmentation F, the demand distribution, and the scores built on them."""

from __future__ import annotations

import pytest

from extender.model.accounting import fragmentation_ratio
from extender.model.catalog import MODELS
from extender.model.demand import PodDemand
from extender.model.fit import Allocator, fit
from extender.model.fragmentation import (
    DemandDistribution,
    gpu_fragmentation,
    parse_mix,
    stranded_compute,
    unusable_by_shape,
)
from extender.model.placement import max_added_compute
from extender.model.scoring import normalize, packing_term, placement_effect, score_fragmentation, scorer_named
from extender.model.state import GpuState, NodeState
from tests.builders import gpu, node

ONLY_3G = {"3g": 1.0}


@pytest.mark.parametrize(
    ("the_gpu", "weights", "expected"),
    [
        # empty dynamic H100: a 3g stream takes 2x3g = 6 of 7 slices; 1 slice unusable
        (gpu("H100-80GB", dynamic=True), ONLY_3G, 1.0),
        # 1g@6 used: 6 free slices; 3g@4 is blocked so only 3g@0 (3 slices): 3 unusable
        (gpu("H100-80GB", "1g.10gb@6", used="1g.10gb@6", dynamic=True), ONLY_3G, 3.0),
        # 1g@3 and 1g@4 used: both 3g placements blocked, all 5 free slices unusable for 3g
        (gpu("H100-80GB", "1g.10gb@3 1g.10gb@4", used="1g.10gb@3 1g.10gb@4", dynamic=True), ONLY_3G, 5.0),
        # a 1g stream can use every free slice of an empty GPU (7 x 1g)
        (gpu("H100-80GB", dynamic=True), {"1g": 1.0}, 0.0),
        # static balanced layout, nothing used: 7 free slices, a 7g stream finds no 7g instance
        (gpu("H100-80GB", "2g.20gb@0 1g.10gb@2 1g.10gb@3 3g.40gb@4"), {"7g": 1.0}, 7.0),
        # ... a 1g stream uses the two 1g instances only: 7 - 2 = 5; half 1g, half 3g: (5 + 4) / 2
        (gpu("H100-80GB", "2g.20gb@0 1g.10gb@2 1g.10gb@3 3g.40gb@4"), {"1g": 0.5, "3g": 0.5}, 4.5),
    ],
    ids=["empty-3g", "top-1g-3g", "middle-1g-3g", "empty-1g", "static-7g", "static-mix"],
)
def test_gpu_fragmentation(the_gpu, weights, expected) -> None:  # type: ignore[no-untyped-def]
    assert gpu_fragmentation(the_gpu, weights) == pytest.approx(expected)


def _used(model: str, layout: str) -> GpuState:
    return gpu(model, layout, used=layout, dynamic=True)


@pytest.mark.parametrize(
    ("the_gpu", "stranded"),
    [
        (gpu("H100-80GB", dynamic=True), 0),
        # 3g.40gb at 0 takes memory slices 0-3 for 3 compute slices: 3g@4 adds 3 more, one slice is lost
        (_used("H100-80GB", "3g.40gb@0"), 1),
        (_used("H100-80GB", "3g.40gb@4"), 0),
        (_used("H100-80GB", "3g.40gb@0 3g.40gb@4"), 1),
        # the 2-slot 1g loses a compute slice anywhere but at 6, where slice 7 is of no use to others
        (_used("H100-80GB", "1g.20gb@0"), 1),
        (_used("H100-80GB", "1g.20gb@6"), 0),
        (_used("H100-80GB", "1g.20gb@0 1g.20gb@2 1g.20gb@4 1g.20gb@6"), 3),
        (_used("H100-80GB", "4g.40gb@0 3g.40gb@4"), 0),
        (_used("A30-24GB", "2g.12gb@0"), 0),
        # static: the layout's dead slice, used or not; the free instances are what is usable
        (gpu("H100-80GB", "3g.40gb@0 3g.40gb@4"), 1),
        (gpu("H100-80GB", "3g.40gb@0 3g.40gb@4", used="3g.40gb@0"), 1),
        (gpu("H100-80GB", "4g.40gb@0 3g.40gb@4", used="4g.40gb@0"), 0),
    ],
)
def test_stranded_compute(the_gpu: GpuState, stranded: int) -> None:
    assert stranded_compute(the_gpu) == stranded


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_an_empty_gpu_strands_nothing(model) -> None:  # type: ignore[no-untyped-def]
    assert max_added_compute(model, 0, (0,) * len(model.base_profiles)) == model.compute_slices


def test_unusable_is_cached_per_state_not_per_index() -> None:
    a = gpu("H100-80GB", "1g.10gb@6", used="1g.10gb@6", dynamic=True, index=0)
    b = gpu("H100-80GB", "1g.10gb@6", used="1g.10gb@6", dynamic=True, index=5)
    assert unusable_by_shape(a) is unusable_by_shape(b)


def test_distribution_decays_towards_the_prior() -> None:
    d = DemandDistribution(prior={"1g": 1, "7g": 1}, prior_weight=2, half_life_s=10)
    d.observe("7g", 98, now=0)
    assert d.weights(now=0)["7g"] == pytest.approx(0.99)
    # after 10 half-lives 98 observations weigh ~0.1: the prior's two pseudo-requests dominate again
    assert d.weights(now=100)["7g"] == pytest.approx((1 + 98 / 1024) / (2 + 98 / 1024), rel=1e-3)


@pytest.mark.parametrize(
    ("text", "message"), [("7g=-1", "weight >= 0"), ("oops", "neither a known name"), ("1g=x", "not shape=weight")]
)
def test_bad_mixes_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


@pytest.mark.parametrize("strategy", ["fragmentation", "fragmentation-spread"])
def test_fragmentation_score_prefers_the_placement_that_keeps_3g_room(strategy: str) -> None:
    # Dynamic world with a placement-honouring allocator: a 1g on the GPU whose 3g@0 half is already
    # broken costs nothing; on the clean GPU it would break a 3g placement. The broken GPU's node is also
    # the fuller one (a busy 7g beside it), so neither tie-break can outrank F.
    clean = node("clean", gpu("H100-80GB", "3g.40gb@4", used="3g.40gb@4", dynamic=True))
    broken = node(
        "broken",
        gpu("H100-80GB", "1g.10gb@0", used="1g.10gb@0", dynamic=True),
        gpu("H100-80GB", "7g.80gb@0", used="7g.80gb@0", dynamic=True),
    )
    weights = parse_mix("3g=1")
    demand = PodDemand(mig=(("1g.10gb", 1),))
    score = scorer_named(strategy)
    scores = {n.name: score(n, fit(n, demand, Allocator.IDEAL), weights) for n in (clean, broken)}
    assert scores["broken"] > scores["clean"]


@pytest.mark.parametrize(
    ("strategy", "preferred"), [("fragmentation", "fuller"), ("fragmentation-spread", "emptier")]
)  # fmt: skip
def test_fragmentation_strategies_break_equal_drops_in_f_their_own_way(strategy: str, preferred: str) -> None:
    nodes = (_dynamic_node("fuller", 8, "4g.40gb@0"), _dynamic_node("emptier", 8, "2g.20gb@0"))
    demand = PodDemand(mig=(("1g.10gb", 1),))
    weights = parse_mix("1g=1")  # every 1g placement lowers F alike
    score = scorer_named(strategy)
    scores = {n.name: score(n, fit(n, demand, Allocator.IDEAL), weights) for n in nodes}
    assert max(scores, key=scores.__getitem__) == preferred


def _dynamic_node(name: str, gpus: int, used: str = "") -> NodeState:
    """``gpus`` dynamic H100s, the first of which runs ``used``."""
    first = gpu("H100-80GB", used, used=used, dynamic=True)
    return node(name, first, *(gpu("H100-80GB", dynamic=True) for _ in range(gpus - 1)))


@pytest.mark.parametrize(
    ("preferred", "other"),
    [
        # equal used compute: the large node, so that the small one can drain and go
        (_dynamic_node("large", 8, "3g.40gb@4"), _dynamic_node("small", 2, "3g.40gb@4")),
        # all idle: open the large node
        (_dynamic_node("large", 8), _dynamic_node("small", 1)),
        # equal size: the fuller node, as before
        (_dynamic_node("fuller", 8, "4g.40gb@0"), _dynamic_node("emptier", 8, "2g.20gb@0")),
        # more used compute beats size
        (_dynamic_node("busy-small", 2, "4g.40gb@0 3g.40gb@4"), _dynamic_node("idle-large", 8)),
    ],
    ids=["same-use", "all-idle", "same-size", "busy-small"],
)
def test_packing_gathers_pods_on_full_size_nodes(preferred: NodeState, other: NodeState) -> None:
    demand = PodDemand(mig=(("1g.10gb", 1),))
    weights = parse_mix("1g=1")  # every 1g placement lowers F alike: packing alone decides
    preferred_score, other_score = (
        score_fragmentation(n, fit(n, demand, Allocator.IDEAL), weights) for n in (preferred, other)
    )
    assert preferred_score > other_score


def test_packing_term_stays_below_one() -> None:
    busy = _dynamic_node("busy", 8, "4g.40gb@0 3g.40gb@4")
    demand = PodDemand(mig=(("1g.10gb", 1),))
    assert packing_term(placement_effect(busy, fit(busy, demand, Allocator.IDEAL))) < 1


def test_normalize_maps_to_0_10_once() -> None:
    assert normalize([1.0, 2.0, 3.0]) == [0, 5, 10]
    assert normalize([4.0, 4.0]) == [10, 10]
    assert normalize([]) == []


def test_unknown_scorer_is_rejected() -> None:
    known = "fragmentation, fragmentation-spread, packing, spread"
    with pytest.raises(ValueError, match=f"unknown scoring strategy 'best'; known: {known}"):
        scorer_named("best")


def test_cluster_ratio() -> None:
    nodes = [node("a", gpu("H100-80GB", dynamic=True))]
    assert fragmentation_ratio(nodes, ONLY_3G) == pytest.approx(1 / 7)


def test_interned_ids_are_never_reused_after_the_table_is_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    from extender.model import state

    before = gpu("H100-80GB", "1g.10gb@6", used="1g.10gb@6", dynamic=True)
    monkeypatch.setattr(state, "_INTERN_LIMIT", 0)  # every new key clears the table first
    other = gpu("H100-80GB", "1g.10gb@5", used="1g.10gb@5", dynamic=True)
    again = gpu("H100-80GB", "1g.10gb@6", used="1g.10gb@6", dynamic=True)
    assert len({before.state_id, other.state_id, again.state_id}) == 3
    # a cache keyed by the old id can never answer for a different state
    assert unusable_by_shape(again) == unusable_by_shape(before)
