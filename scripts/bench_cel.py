"""Speed of DRA selector evaluation on one node's devices as NVIDIA's driver publishes them (8 H100s, DynamicMIG:
8 full GPUs and 200 MIG placements), for the selectors of its DeviceClasses and typical requests.

    .venv/bin/python scripts/bench_cel.py [--rounds N]

Prints evaluations per second: without the memo (every evaluation runs the expression), a cold pass (memo
emptied first; devices equal in what a selector reads share one evaluation) and warm passes.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

from extender.model.catalog import model_named
from extender.model.dra import cel
from extender.model.dra.cel import Selector, compile_selector
from extender.model.dra.driver import DRIVER, dynamic_mig_slices
from extender.model.dra.types import Device
from extender.view.dra_objects import parse_resource_slice

SELECTORS = (
    "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'",
    "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'",
    "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0",
    "device.attributes['gpu.nvidia.com'].driverVersion.isGreaterThan(semver('550.0.0'))",
    "cel.bind(a, device.attributes['gpu.nvidia.com'], a.type == 'mig' && a.profile in ['2g.20gb', '3g.40gb'])",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    slices = [parse_resource_slice(s) for s in dynamic_mig_slices("node-1", model_named("H100-80GB"), 8)]
    devices = [d for s in slices for d in s.devices]
    selectors = [compile_selector(e) for e in SELECTORS]
    count = len(devices) * len(selectors)

    def rate(run: Callable[[Selector, Device], bool], rounds: int) -> float:
        start = time.perf_counter()
        for _ in range(rounds):
            for s in selectors:
                for d in devices:
                    with contextlib.suppress(cel.SelectorError):  # the profile of a full GPU: a missing attribute
                        run(s, d)
        return rounds * count / (time.perf_counter() - start)

    uncached = rate(lambda s, d: s.evaluate(d, DRIVER), max(1, args.rounds // 4))
    cel._MATCHES.clear()
    cold = rate(lambda s, d: s.matches(d, DRIVER), 1)
    warm = rate(lambda s, d: s.matches(d, DRIVER), args.rounds)
    print(f"{len(devices)} devices x {len(selectors)} selectors")
    print(f"no memo: {uncached:,.0f} evaluations/s")
    print(f"cold:    {cold:,.0f} evaluations/s ({len(cel._MATCHES)} distinct answers kept)")
    print(f"warm:    {warm:,.0f} evaluations/s")


if __name__ == "__main__":
    main()
