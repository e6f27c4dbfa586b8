"""``cluster_verdict`` and ``suggest_layout``: each verdict and reason, and suggestions that really host the demand."""

from __future__ import annotations

import pytest

from extender.model.catalog import GpuModel, model_named
from extender.model.demand import PodDemand
from extender.model.fit import fit
from extender.model.migparted import MigPartedConfig, default_config_document, parse_config
from extender.model.policy import ClusterVerdict, PodVerdict, PolicyConfig, cluster_verdict, suggest_layout
from extender.model.state import GpuState, Instance, NodeState
from tests.builders import gpu, node

H100 = model_named("H100-80GB")
MIG_PARTED = parse_config(default_config_document())
POLICY = PolicyConfig()
ALL_1G = " ".join(f"1g.10gb@{i}" for i in range(7))


def want(*counts: tuple[str, int]) -> PodDemand:
    return PodDemand(mig=tuple(sorted(counts)))


def hosts(suggestion: str, demand: PodDemand, model: GpuModel, gpu_count: int, config: MigPartedConfig) -> bool:
    """Whether an idle node of this shape, laid out as ``suggestion`` (a config name or a geometry), fits ``demand``."""
    if suggestion in config.names():
        gpus = []
        for index in range(gpu_count):
            spec = config.resolve(suggestion, model, index)
            assert spec is not None and spec.mig_enabled, suggestion
            gpus.append(GpuState(index, model, tuple(Instance(p, False) for p in spec.layout(model))))
        return fit(NodeState("new", tuple(gpus)), demand).fits_now
    # a geometry: "gpu0: 4g.40gb@0 3g.40gb@4; gpu1: ..."
    layouts = dict(part.split(": ") for part in suggestion.split("; "))
    assert set(layouts) <= {f"gpu{i}" for i in range(gpu_count)}, suggestion
    built = [gpu(model.name, layouts.get(f"gpu{i}", "")) for i in range(gpu_count)]
    return fit(node("new", *built), demand).fits_now


# --- suggest_layout ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("demand", "gpu_count", "suggestion"),
    [
        # a named config wins, all-balanced before the others
        (want(("3g.40gb", 1)), 1, "all-balanced"),
        (want(("7g.80gb", 1)), 1, "all-7g.80gb"),
        (want(("1g.10gb", 7)), 1, "all-1g.10gb"),
        (want(("2g.20gb", 2), ("3g.40gb", 1)), 2, "all-balanced"),  # over two GPUs
        (want(("3g.40gb", 3)), 2, "all-3g.40gb"),
        # no named config hosts it: the geometry of an ideal placement on empty GPUs
        (want(("3g.40gb", 1), ("4g.40gb", 1)), 1, "gpu0: 4g.40gb@0 3g.40gb@4"),
        (want(("2g.20gb", 2), ("3g.40gb", 1)), 1, "gpu0: 2g.20gb@0 2g.20gb@2 3g.40gb@4"),
        (want(("1g.10gb", 1), ("7g.80gb", 1)), 2, "gpu0: 7g.80gb@0; gpu1: 1g.10gb@6"),
        # nothing this shape could ever hold
        (want(("7g.80gb", 2)), 1, None),
        (want(("1g.10gb", 8)), 1, None),
        (want(("7g.40gb", 1)), 1, None),  # an A100 profile on an H100
        (want(("9g.99gb", 1)), 1, None),  # no such profile
    ],
)
def test_suggest_layout(demand: PodDemand, gpu_count: int, suggestion: str | None) -> None:
    assert suggest_layout(demand, H100, gpu_count, MIG_PARTED) == suggestion
    if suggestion is not None:
        assert hosts(suggestion, demand, H100, gpu_count, MIG_PARTED)


def test_suggest_layout_takes_a_geometry_when_the_configs_do_not_host_it() -> None:
    only_1g = parse_config(
        {
            "version": "v1",
            "mig-configs": {"small": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}}]},
        }
    )
    demand = want(("3g.40gb", 2))
    assert suggest_layout(demand, H100, 1, only_1g) == "gpu0: 3g.40gb@0 3g.40gb@4"
    assert suggest_layout(want(("1g.10gb", 3)), H100, 1, only_1g) == "small"


# --- cluster_verdict ---------------------------------------------------------------------------------------------

BUSY = node("busy", gpu("H100-80GB", "3g.40gb@0 3g.40gb@4", used="3g.40gb@0 3g.40gb@4"))
IDLE_3G = node("idle-3g", gpu("H100-80GB", "3g.40gb@0 3g.40gb@4"))
IDLE_1G = node("idle-1g", gpu("H100-80GB", ALL_1G))
HALF = node("half", gpu("H100-80GB", "3g.40gb@0 3g.40gb@4", used="3g.40gb@0"))
A100_IDLE = node("a100", gpu("A100-40GB", "3g.20gb@0 3g.20gb@4"))
# two idle all-1g GPUs need both re-partitioned for 2x 7g; one free 7g and one idle all-1g GPU need one
TWO_CHANGES = node("two-changes", gpu("H100-80GB", ALL_1G), gpu("H100-80GB", ALL_1G))
ONE_CHANGE = node("one-change", gpu("H100-80GB", "7g.80gb@0"), gpu("H100-80GB", ALL_1G))


@pytest.mark.parametrize(
    ("demand", "nodes", "expected"),
    [
        (
            want(("3g.40gb", 1)),
            [BUSY, HALF, IDLE_3G],
            ClusterVerdict(PodVerdict.FITS, "fits on an existing node", "half"),
        ),
        (
            want(("7g.80gb", 1)),
            [BUSY, IDLE_3G],
            ClusterVerdict(
                PodVerdict.RELAYOUT,
                "re-partitioning idle GPUs of node idle-3g would host 1x 7g.80gb",
                "idle-3g",
                "all-7g.80gb",
            ),
        ),
        (
            # the node with the fewest GPUs to re-partition, not the first one
            want(("7g.80gb", 2)),
            [TWO_CHANGES, ONE_CHANGE],
            ClusterVerdict(
                PodVerdict.RELAYOUT,
                "re-partitioning idle GPUs of node one-change would host 2x 7g.80gb",
                "one-change",
                "all-7g.80gb",
            ),
        ),
        (
            # no idle GPU to re-partition, but a new node of a shape the cluster has would host it
            want(("7g.80gb", 1)),
            [BUSY, HALF],
            ClusterVerdict(
                PodVerdict.NO_LAYOUT_FITS,
                "no existing node can host 1x 7g.80gb; a new 1x H100-80GB node with layout all-7g.80gb would",
                None,
                "all-7g.80gb",
            ),
        ),
        (
            # the A100 shape cannot host an H100 profile; the busy H100's shape can
            want(("3g.40gb", 1)),
            [A100_IDLE, BUSY],
            ClusterVerdict(
                PodVerdict.NO_LAYOUT_FITS,
                "no existing node can host 1x 3g.40gb; a new 1x H100-80GB node with layout all-balanced would",
                None,
                "all-balanced",
            ),
        ),
        (
            want(("7g.80gb", 2)),
            [BUSY, IDLE_3G],
            ClusterVerdict(
                PodVerdict.NO_LAYOUT_FITS,
                "no node shape in the cluster can host it: 2x 7g.80gb exceeds what this node's GPUs can ever hold",
            ),
        ),
        (
            want(("9g.99gb", 1)),
            [BUSY],
            ClusterVerdict(
                PodVerdict.NO_LAYOUT_FITS, "no node shape in the cluster can host it: unknown profile 9g.99gb"
            ),
        ),
        (
            want(("7g.80gb", 1)),
            [A100_IDLE],
            ClusterVerdict(
                PodVerdict.NO_LAYOUT_FITS,
                "no node shape in the cluster can host it: A100-40GB offers no profile 7g.80gb",
            ),
        ),
        (
            want(("7g.80gb", 1)),
            [],
            ClusterVerdict(PodVerdict.NO_LAYOUT_FITS, "no node shape in the cluster can host it: no MIG-capable node"),
        ),
    ],
    ids=[
        "fits-first-node-that-fits",
        "relayout",
        "relayout-fewest-changes",
        "no-layout-fits-new-node",
        "no-layout-fits-other-shape",
        "no-shape-too-big",
        "unknown-profile",
        "profile-of-another-model",
        "no-nodes",
    ],
)
def test_cluster_verdict(demand: PodDemand, nodes: list[NodeState], expected: ClusterVerdict) -> None:
    verdict = cluster_verdict(demand, nodes, POLICY, MIG_PARTED)
    assert verdict == expected
    if verdict.suggested_layout is not None:
        shape = next(n for n in nodes if n.name == verdict.node) if verdict.node else BUSY
        assert hosts(verdict.suggested_layout, demand, H100, len(shape.gpus), MIG_PARTED)


def test_the_three_most_frequent_reasons_are_given_without_the_mig_prefix() -> None:
    a30 = node("a30", gpu("A30-24GB", "2g.12gb@0 2g.12gb@2"))
    a100s = [node(f"a100-{i}", gpu("A100-40GB", "3g.20gb@0 3g.20gb@4")) for i in range(3)]
    b200 = node("b200", gpu("B200"))  # idle, no instances yet
    h200s = [node(f"h200-{i}", gpu("H200-141GB", "3g.71gb@0 3g.71gb@4")) for i in range(2)]
    verdict = cluster_verdict(want(("7g.80gb", 1)), [a30, *a100s, b200, *h200s], POLICY, MIG_PARTED)
    assert verdict.verdict is PodVerdict.NO_LAYOUT_FITS and verdict.suggested_layout is None
    # by frequency (3, 2, then the first of the reasons given once), not in the order of the nodes
    assert verdict.reason == (
        "no node shape in the cluster can host it: A100-40GB offers no profile 7g.80gb; "
        "H200-141GB offers no profile 7g.80gb; A30-24GB offers no profile 7g.80gb"
    )
