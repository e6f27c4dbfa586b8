"""Capacity planning for pods no node hosts: which pools, how many nodes, what stays unhosted."""

from __future__ import annotations

import pytest

from extender.model.catalog import model_named
from extender.model.demand import PodDemand
from extender.model.eligibility import PodPlacement, Requirement, Taint, Term, Toleration
from extender.model.migparted import DEFAULT_CONFIG, MigPartedError
from extender.model.policy import PolicyConfig
from extender.model.provisioning import (
    Pool,
    PoolNodes,
    PoolsError,
    Unhosted,
    demand_slices,
    parse_pools,
    plan_capacity,
)

A100 = model_named("A100-80GB")
H100 = model_named("H100-80GB")
BALANCED = Pool("a100-balanced", A100, 8, "all-balanced", cost=2.0, max_nodes=3)
SMALL = Pool("a100-1g", A100, 8, "all-1g.10gb", cost=1.0, max_nodes=2)
WHOLE = Pool("h100-7g", H100, 8, "all-7g.80gb", cost=3.0, max_nodes=1)
POOLS = [(p, p.empty_node(DEFAULT_CONFIG)) for p in (BALANCED, SMALL, WHOLE)]


ONE_1G = PodDemand((("1g.10gb", 1),))
ONE_3G = PodDemand((("3g.40gb", 1),))
ONE_7G = PodDemand((("7g.80gb", 1),))
TWO_4G = PodDemand((("4g.40gb", 2),))


def test_a_pool_node_is_its_config_applied() -> None:
    assert BALANCED.advertised(DEFAULT_CONFIG) == {
        "nvidia.com/mig-1g.10gb": 16,
        "nvidia.com/mig-2g.20gb": 8,
        "nvidia.com/mig-3g.40gb": 8,
    }
    assert SMALL.advertised(DEFAULT_CONFIG) == {"nvidia.com/mig-1g.10gb": 56}
    assert WHOLE.advertised(DEFAULT_CONFIG) == {"nvidia.com/mig-7g.80gb": 8}


def test_an_unknown_config_names_itself() -> None:
    with pytest.raises(MigPartedError, match="all-9g"):
        Pool("bad", A100, 8, "all-9g").empty_node(DEFAULT_CONFIG)


@pytest.mark.parametrize(
    ("demands", "arriving", "requested", "want_requests", "want_unhosted"),
    [
        pytest.param([], {}, {}, {}, {}, id="nothing-pending-nothing-asked"),
        pytest.param([ONE_1G], {}, {}, {"a100-1g": 1}, {}, id="cheapest-pool-that-hosts"),
        pytest.param([ONE_3G], {}, {}, {"a100-balanced": 1}, {}, id="only-pool-with-the-profile"),
        pytest.param([ONE_1G] * 57, {}, {}, {"a100-1g": 2}, {}, id="56-per-node-then-a-second"),
        pytest.param(
            [ONE_1G] * 20, {}, {"a100-balanced": 1}, {"a100-balanced": 1, "a100-1g": 1}, {}, id="requested-first"
        ),
        pytest.param([ONE_1G] * 16, {"a100-balanced": 1}, {}, {}, {}, id="an-arriving-node-hosts-it"),
        pytest.param([ONE_3G], {}, {"a100-1g": 1}, {"a100-balanced": 1}, {}, id="useless-request-dropped"),
        pytest.param([TWO_4G], {}, {}, {}, {0: Unhosted.NO_POOL}, id="no-pool-has-4g"),
        pytest.param([ONE_7G] * 9, {}, {}, {"h100-7g": 1}, {8: Unhosted.CAPPED}, id="capped"),
        pytest.param(
            [ONE_3G] * 5 + [ONE_1G] * 60,
            {},
            {"a100-balanced": 1},
            {"a100-balanced": 1, "a100-1g": 1},
            {},
            id="mixed",
        ),
    ],
)
def test_plan_capacity(
    demands: list[PodDemand],
    arriving: dict[str, int],
    requested: dict[str, int],
    want_requests: dict[str, int],
    want_unhosted: dict[int, Unhosted],
) -> None:
    plan = plan_capacity(POOLS, demands, PolicyConfig(), arriving=arriving, requested=requested)
    assert {k: v for k, v in plan.requests.items() if v} == want_requests
    assert dict(plan.unhosted) == want_unhosted
    assert set(plan.hosts) | set(plan.unhosted) == set(range(len(demands)))


def test_caps_count_requests_already_made() -> None:
    plan = plan_capacity(POOLS, [ONE_7G] * 16, PolicyConfig(), requested={"h100-7g": 1})
    assert plan.requests["h100-7g"] == 1
    assert plan.new["h100-7g"] == 0
    assert len(plan.unhosted) == 8


def test_largest_first_so_big_demands_find_whole_gpus() -> None:
    # 8x 3g first takes one 3g per GPU; the 1g pods then fill the 1g slots of the same node.
    plan = plan_capacity(POOLS[:1], [ONE_1G] * 16 + [ONE_3G] * 8, PolicyConfig())
    assert plan.requests == {"a100-balanced": 1}


@pytest.mark.parametrize(
    ("demand", "slices"),
    [(ONE_1G, 1), (ONE_3G, 3), (TWO_4G, 8), (PodDemand((("1c.3g.40gb", 2),)), 6), (PodDemand(gpus=2), 16)],
)
def test_demand_slices(demand: PodDemand, slices: int) -> None:
    assert demand_slices(demand) == slices


GOOD_ENTRY = {"nodePool": "p4de", "gpu": "A100-SXM4-80GB", "gpusPerNode": 8, "migConfig": "all-balanced"}


def test_parse_pools_defaults_and_aliases() -> None:
    (pool,) = parse_pools({"pools": [GOOD_ENTRY]})
    assert (pool.name, pool.model, pool.gpus_per_node, pool.mig_config) == ("p4de", A100, 8, "all-balanced")
    assert (pool.cost, pool.max_nodes) == (1.0, 4)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (None, "expected a mapping with a list 'pools'"),
        ({"pools": {}}, "expected a mapping with a list 'pools'"),
        ({"pools": ["x"]}, r"pools\[0\]: expected a mapping"),
        ({"pools": [{**GOOD_ENTRY, "gpus": 8}]}, r"pools\[0\]: unknown field\(s\) gpus"),
        ({"pools": [{**GOOD_ENTRY, "nodePool": "P4DE"}]}, r"pools\[0\].nodePool: 'P4DE' is not a NodePool name"),
        ({"pools": [GOOD_ENTRY, GOOD_ENTRY]}, r"pools\[1\].nodePool: 'p4de' is listed twice"),
        ({"pools": [{**GOOD_ENTRY, "gpu": "Z100"}]}, r"pools\[0\].gpu: unknown GPU model"),
        ({"pools": [{**GOOD_ENTRY, "gpusPerNode": "8"}]}, r"gpusPerNode: expected an integer, not '8'"),
        ({"pools": [{**GOOD_ENTRY, "gpusPerNode": 0}]}, r"gpusPerNode: 0 is outside 1..64"),
        ({"pools": [{**GOOD_ENTRY, "migConfig": ""}]}, r"migConfig: '' is not a mig-parted config name"),
        ({"pools": [{**GOOD_ENTRY, "cost": -1}]}, r"cost: must be positive, not -1.0"),
        ({"pools": [{**GOOD_ENTRY, "cost": True}]}, r"cost: expected a number, not True"),
        ({"pools": [{**GOOD_ENTRY, "maxNodes": 0}]}, r"maxNodes: must be at least 1, not 0"),
    ],
)
def test_parse_pools_names_the_problem(document: object, message: str) -> None:
    with pytest.raises(PoolsError, match=message):
        parse_pools(document)


RESEARCH = Taint("dedicated", "research", "NoSchedule")
P4DE = PoolNodes(
    labels={
        "karpenter.sh/nodepool": frozenset({"p4de"}),
        "node.kubernetes.io/instance-type": frozenset({"p4de.24xlarge"}),
        "topology.kubernetes.io/zone": frozenset({"us-east-1a", "us-east-1b"}),
    },
    absent=frozenset({"example.com/spot-only"}),
    taints=(RESEARCH, Taint("nvidia.com/gpu", "", "NoSchedule")),
)
GPU_TOLERATION = Toleration("nvidia.com/gpu", "Exists")


def affinity(*requirements: Requirement) -> tuple[Term, ...]:
    return (Term(requirements),)


@pytest.mark.parametrize(
    ("placement", "admitted"),
    [
        pytest.param(PodPlacement((GPU_TOLERATION,)), False, id="a-taint-not-tolerated"),
        pytest.param(
            PodPlacement((GPU_TOLERATION, Toleration("dedicated", "Equal", "research"))), True, id="tolerated"
        ),
        pytest.param(PodPlacement((Toleration(operator="Exists"),)), True, id="every-taint-tolerated"),
        pytest.param(
            PodPlacement((Toleration(operator="Exists"),), (("karpenter.sh/nodepool", "other"),)),
            False,
            id="selector-other-pool",
        ),
        pytest.param(
            PodPlacement((Toleration(operator="Exists"),), (("kubernetes.io/arch", "amd64"),)),
            True,
            id="selector-left-open",
        ),
        pytest.param(
            PodPlacement((Toleration(operator="Exists"),), (("example.com/spot-only", "true"),)),
            False,
            id="selector-ruled-out",
        ),
        pytest.param(
            PodPlacement(
                (Toleration(operator="Exists"),),
                required_terms=affinity(Requirement("topology.kubernetes.io/zone", "In", ("us-east-1b", "us-east-1c"))),
            ),
            True,
            id="affinity-one-zone-of-two",
        ),
        pytest.param(
            PodPlacement(
                (Toleration(operator="Exists"),),
                required_terms=affinity(
                    Requirement("node.kubernetes.io/instance-type", "NotIn", ("p4de.24xlarge",)),
                ),
            ),
            False,
            id="affinity-excludes-the-instance-type",
        ),
        pytest.param(
            PodPlacement(
                (Toleration(operator="Exists"),),
                required_terms=(
                    Term((Requirement("node.kubernetes.io/instance-type", "In", ("p5.48xlarge",)),)),
                    Term((Requirement("topology.kubernetes.io/zone", "NotIn", ("us-east-1a",)),)),
                ),
            ),
            True,
            id="second-term-matches",
        ),
        pytest.param(
            PodPlacement(
                (Toleration(operator="Exists"),),
                required_terms=affinity(Requirement("metadata.name", "In", ("gpu-7",), field=True)),
            ),
            False,
            id="pinned-to-an-existing-node",
        ),
    ],
)
def test_pool_nodes_admit_what_kube_scheduler_would(placement: PodPlacement, admitted: bool) -> None:
    assert P4DE.admits(placement) is admitted


def test_demands_are_planned_only_on_pools_their_pods_may_use() -> None:
    only_balanced = frozenset({"a100-balanced"})
    plan = plan_capacity(POOLS, [ONE_1G, ONE_1G, ONE_3G], PolicyConfig(), usable=[only_balanced, None, frozenset()])
    assert plan.hosts == {0: "a100-balanced", 1: "a100-balanced"}, "the second packed on the first one's node"
    assert plan.unhosted == {2: Unhosted.EXCLUDED}
    plan = plan_capacity(POOLS, [ONE_1G, ONE_1G], PolicyConfig(), usable=[None, only_balanced])
    assert plan.requests["a100-1g"] == 0 and plan.requests["a100-balanced"] == 1, "one node that both may use"
    plan = plan_capacity(
        POOLS, [ONE_1G], PolicyConfig(), usable=[frozenset({"a100-1g"})], requested={"a100-balanced": 1}
    )
    assert plan.hosts == {0: "a100-1g"} and plan.requests == {"a100-balanced": 0, "a100-1g": 1, "h100-7g": 0}
