"""Fit of a demand on a node: table-driven cases, and exhaustive search on small dynamic nodes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extender.model.catalog import model_named
from extender.model.demand import PodDemand
from extender.model.fit import Allocator, Verdict, fit
from extender.model.placement import Placement
from extender.model.state import GpuState, Instance, MigStrategy, NodeState
from tests.builders import gpu, node

BALANCED_A100 = "2g.10gb@0 1g.5gb@2 1g.5gb@3 3g.20gb@4"


def want(**counts: int) -> PodDemand:
    return PodDemand(mig=tuple(sorted((k.replace("_", "."), v) for k, v in counts.items())))


def mig(name: str, count: int = 1) -> PodDemand:
    return PodDemand(mig=((name, count),))


@pytest.mark.parametrize(
    ("the_node", "demand", "verdict", "reason"),
    [
        # a free 1g.5gb instance on the busy GPU
        (node("n", gpu("A100-40GB", BALANCED_A100, used="3g.20gb@4")), mig("1g.5gb"), Verdict.FITS_NOW, ""),
        # both 3g on the node are used; the idle second GPU has a free 3g
        (
            node("n", gpu("A100-40GB", BALANCED_A100, used="3g.20gb@4"), gpu("A100-40GB", BALANCED_A100)),
            mig("3g.20gb"),
            Verdict.FITS_NOW,
            "",
        ),
        # 7g exists on no GPU; the idle second GPU could be re-partitioned
        (
            node("n", gpu("A100-40GB", BALANCED_A100, used="1g.5gb@2"), gpu("A100-40GB", BALANCED_A100)),
            mig("7g.40gb"),
            Verdict.RELAYOUT,
            "MIG: 1x 7g.40gb fits only after re-partitioning idle GPUs",
        ),
        # the only 3g is used: it fits once that pod leaves
        (
            node("n", gpu("A100-40GB", BALANCED_A100, used="3g.20gb@4")),
            mig("3g.20gb"),
            Verdict.WAIT,
            "MIG: not enough free instances for 1x 3g.20gb",
        ),
        # a busy GPU whose layout has no 4g: a different layout would hold it
        (
            node("n", gpu("A100-40GB", BALANCED_A100, used="1g.5gb@2")),
            mig("4g.20gb"),
            Verdict.LAYOUT_MISMATCH,
            "MIG: 1x 4g.20gb needs a different MIG layout on busy GPUs",
        ),
        (
            node("n", gpu("A100-40GB", BALANCED_A100)),
            mig("7g.40gb", 2),
            Verdict.NEVER,
            "MIG: 2x 7g.40gb exceeds what this node's GPUs can ever hold",
        ),
        (
            node("n", gpu("A100-40GB", BALANCED_A100)),
            mig("3g.71gb"),
            Verdict.NEVER,
            "MIG: A100-40GB offers no profile 3g.71gb",
        ),
        (
            node("n", gpu("A100-40GB", BALANCED_A100)),
            mig("3g.21gb"),
            Verdict.NEVER,
            "MIG: unknown profile 3g.21gb (did you mean 3g.20gb",
        ),
        (node("n", gpu("A100-40GB", BALANCED_A100)), PodDemand(), Verdict.FITS_NOW, "no MIG demand"),
        # dynamic GPUs: free slices at legal placements; 1g@6 blocks 3g@4 but 3g@0 is free
        (
            node("n", gpu("H100-80GB", "1g.10gb@6", used="1g.10gb@6", dynamic=True)),
            mig("3g.40gb"),
            Verdict.FITS_NOW,
            "",
        ),
        (
            node("n", gpu("H100-80GB", "1g.10gb@3 1g.10gb@6", used="1g.10gb@3 1g.10gb@6", dynamic=True)),
            mig("3g.40gb"),
            Verdict.WAIT,
            "MIG: not enough free placement for 1x 3g.40gb",
        ),
        # several profiles spread over two GPUs
        (
            node("n", gpu("A100-40GB", BALANCED_A100), gpu("A100-40GB", BALANCED_A100)),
            want(**{"3g_20gb": 2, "1g_5gb": 3}),
            Verdict.FITS_NOW,
            "",
        ),
    ],
    ids=[
        "free-1g",
        "second-gpu",
        "relayout-idle",
        "wait",
        "layout-mismatch",
        "never",
        "model-lacks-profile",
        "misspelled",
        "no-demand",
        "dynamic-fits",
        "dynamic-wait",
        "multi-profile",
    ],
)
def test_fit_table(the_node: NodeState, demand: PodDemand, verdict: Verdict, reason: str) -> None:
    result = fit(the_node, demand)
    assert result.verdict is verdict
    assert result.reason.startswith(reason)
    if verdict in (Verdict.FITS_NOW, Verdict.RELAYOUT):
        assert sum(1 for _ in result.plan) == sum(n for _, n in demand.mig)


def test_plan_never_touches_used_instances_and_relayouts_only_idle_gpus() -> None:
    busy = gpu("A100-40GB", BALANCED_A100, used="1g.5gb@2")
    result = fit(node("n", busy, gpu("A100-40GB", BALANCED_A100)), mig("7g.40gb"))
    assert [(p.gpu_index, str(p.placement), p.relayout) for p in result.plan] == [(1, "7g.40gb@0", True)]


def test_small_slices_pack_onto_busy_gpus() -> None:
    result = fit(
        node("n", gpu("A100-40GB", BALANCED_A100), gpu("A100-40GB", BALANCED_A100, used="3g.20gb@4")), mig("1g.5gb")
    )
    assert result.plan[0].gpu_index == 1


def test_first_fit_allocator_takes_the_lowest_device() -> None:
    the_node = node("n", gpu("H100-80GB", dynamic=True), gpu("H100-80GB", "3g.40gb@4", used="3g.40gb@4", dynamic=True))
    assert [str(p.placement) for p in fit(the_node, mig("1g.10gb"), Allocator.FIRST_FIT).plan] == ["1g.10gb@0"]
    assert fit(the_node, mig("1g.10gb"), Allocator.FIRST_FIT).plan[0].gpu_index == 0
    # the policy's own choice: the busy GPU, top free slot of its lower half
    ideal = fit(the_node, mig("1g.10gb"), Allocator.IDEAL).plan[0]
    assert (ideal.gpu_index, ideal.placement.start) == (1, 3)


def test_single_strategy_serves_nvidia_com_gpu_as_its_profile() -> None:
    a100 = model_named("A100-40GB")
    one_g = a100.profile("1g.5gb")
    gpus = tuple(GpuState(i, a100, tuple(Instance(Placement(s, one_g), False) for s in range(7))) for i in range(2))
    single = NodeState("s", gpus, strategy=MigStrategy.SINGLE, single_profile=one_g)
    assert fit(single, PodDemand(gpus=9)).verdict is Verdict.FITS_NOW
    assert fit(single, PodDemand(gpus=15)).verdict is Verdict.NEVER
    assert fit(single, mig("1g.5gb")).reason == "MIG: node serves only 1g.5gb as nvidia.com/gpu (single strategy)"


# --- exhaustive search on small dynamic nodes ------------------------------------------------------------

A30 = model_named("A30-24GB")
A100 = model_named("A100-40GB")


def _fits_by_brute_force(gpu_masks: list[int], model, wanted: list) -> bool:  # type: ignore[no-untyped-def]
    slots = [(g, p, s) for g in range(len(gpu_masks)) for p in set(wanted) for s in p.starts]
    for choice in itertools.product(*([(g, s) for g, q, s in slots if q is p] for p in wanted)):
        masks = list(gpu_masks)
        for profile, (g, s) in zip(wanted, choice):
            bits = profile.occupancy(s)
            if masks[g] & bits:
                break
            masks[g] |= bits
        else:
            return True
    return False


@st.composite
def small_dynamic_nodes(draw):  # type: ignore[no-untyped-def]
    model = draw(st.sampled_from([A30, A100]))
    bases = [p for p in model.profiles if not p.has_attributes]
    gpus = []
    masks = []
    for index in range(draw(st.integers(1, 2))):
        used = draw(st.lists(st.sampled_from(bases), max_size=3))
        mask = 0
        instances = []
        for profile in used:
            free = [s for s in profile.starts if not profile.occupancy(s) & mask]
            if free and sum(1 for i in instances if i.profile is profile) < profile.max_instances:
                start = draw(st.sampled_from(free))
                instances.append(Instance(Placement(start, profile), True))
                mask |= profile.occupancy(start)
        gpus.append(GpuState(index, model, tuple(instances), dynamic=True))
        masks.append(mask)
    wanted = draw(st.lists(st.sampled_from(bases), min_size=1, max_size=3))
    return NodeState("n", tuple(gpus)), masks, model, wanted


@settings(max_examples=300, deadline=None)
@given(small_dynamic_nodes())
def test_fits_now_agrees_with_exhaustive_search(case) -> None:  # type: ignore[no-untyped-def]
    the_node, masks, model, wanted = case
    counts: dict[str, int] = {}
    for p in wanted:
        counts[p.name] = counts.get(p.name, 0) + 1
    demand = PodDemand(mig=tuple(sorted(counts.items())))
    for allocator in Allocator:
        result = fit(the_node, demand, allocator)
        assert (result.verdict is Verdict.FITS_NOW) == _fits_by_brute_force(masks, model, wanted)
        if result.fits_now:
            after = list(masks)
            for planned in result.plan:
                assert not after[planned.gpu_index] & planned.placement.mask
                after[planned.gpu_index] |= planned.placement.mask


def test_absurd_demands_are_answered_not_searched_forever() -> None:
    # 1,000 instances of three profiles: each GPU can hold at most max_instances of each
    the_node = node("n", *(gpu("H100-80GB", dynamic=True) for _ in range(8)))
    result = fit(the_node, want(**{"1g_10gb": 1000, "2g_20gb": 1000, "3g_40gb": 1000}))
    assert result.verdict is Verdict.NEVER
    assert (
        result.reason
        == "MIG: 1000x 1g.10gb + 1000x 2g.20gb + 1000x 3g.40gb exceeds what this node's GPUs can ever hold"
    )
