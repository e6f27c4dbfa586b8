"""Micro-benchmark of the pure model: fit plus fragmentation score of one demand on one 8-GPU node.

    python scripts/bench_model.py [--repeat 20000]

Prints the median time per (fit + score) over several rounds, for a static node (pre-made all-balanced
instances) and a dynamic node, cold (first call per GPU state) and warm (cached GPU states).
"""

from __future__ import annotations

import argparse
import statistics
import time

from extender.model.catalog import model_named
from extender.model.demand import PodDemand
from extender.model.fit import Allocator, fit
from extender.model.fragmentation import DemandDistribution, parse_mix
from extender.model.layouts import balanced_counts, place_counts
from extender.model.placement import Placement
from extender.model.scoring import score_fragmentation
from extender.model.state import GpuState, Instance, NodeState


def static_node() -> NodeState:
    model = model_named("H100-80GB")
    layout = place_counts(model, balanced_counts(model))
    gpus = []
    for index in range(8):
        # half the GPUs busy: their 3g instance is used
        instances = tuple(Instance(p, used=index % 2 == 0 and p.profile.compute_slices == 3) for p in layout)
        gpus.append(GpuState(index, model, instances))
    return NodeState("static", tuple(gpus))


def dynamic_node() -> NodeState:
    model = model_named("H100-80GB")
    one_g = model.profile("1g.10gb")
    gpus = tuple(
        GpuState(i, model, tuple(Instance(Placement(s, one_g), True) for s in range(i % 4)), dynamic=True)
        for i in range(8)
    )
    return NodeState("dynamic", gpus)


def measure(node: NodeState, demand: PodDemand, allocator: Allocator, weights: dict[str, float], repeat: int) -> float:
    rounds = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(repeat):
            score_fragmentation(node, fit(node, demand, allocator), weights)
        rounds.append((time.perf_counter() - start) / repeat)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5000)
    args = parser.parse_args()
    weights = DemandDistribution(prior=parse_mix("inference")).weights()
    cases = [
        ("static  1x 1g.10gb", static_node(), PodDemand(mig=(("1g.10gb", 1),)), Allocator.KUBELET),
        ("static  1x 3g.40gb", static_node(), PodDemand(mig=(("3g.40gb", 1),)), Allocator.KUBELET),
        ("dynamic 1x 3g.40gb", dynamic_node(), PodDemand(mig=(("3g.40gb", 1),)), Allocator.FIRST_FIT),
        ("dynamic 2x 1g + 1x 2g", dynamic_node(), PodDemand(mig=(("1g.10gb", 2), ("2g.20gb", 1))), Allocator.IDEAL),
    ]
    for name, node, demand, allocator in cases:
        start = time.perf_counter()
        score_fragmentation(node, fit(node, demand, allocator), weights)
        cold = time.perf_counter() - start
        warm = measure(node, demand, allocator, weights, args.repeat)
        print(f"{name:<24} cold {cold * 1e6:9.1f} us   warm median {warm * 1e6:7.1f} us per fit+score")


if __name__ == "__main__":
    main()
