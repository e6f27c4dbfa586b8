"""Speed of the allocator model on one node as NVIDIA's driver publishes it (8 H100s, DynamicMIG: one counter
slice and 8 GPU slices of 26 devices), its first four GPUs each holding a 1g.10gb at memory slice 0 and a
1g.20gb at slices 2-3.

    .venv/bin/python scripts/bench_dra_allocator.py [--rounds N]

Prints allocations per second for typical claims, three ways:

- cold: every process-wide cache emptied (CEL compilations and answers), then pools gathered from the
  slices (``pools_of``) and laid out (``prepare``) for the call;
- new pools: pools gathered and laid out for each call, the CEL caches warm (a node whose slices changed);
- warm: the node's ``PreparedPools`` kept across calls, as the extender keeps them until its slices change.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from extender.model.caches import CACHES
from extender.model.catalog import model_named
from extender.model.dra.allocator import Result, allocate, prepare
from extender.model.dra.driver import DRIVER, dynamic_mig_slices
from extender.model.dra.pools import pools_of
from extender.model.dra.types import ClaimSpec, DeviceClass, DeviceConstraint, DeviceRequest, DeviceSubRequest
from extender.view.dra_objects import parse_resource_slice

NODE = "node-1"
MIG = "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'"
CLASSES = {"mig.nvidia.com": DeviceClass("mig.nvidia.com", (MIG,))}


def profile(name: str, count: int = 1) -> DeviceSubRequest:
    return DeviceSubRequest(
        "mig.nvidia.com", (f"device.attributes['gpu.nvidia.com'].profile == '{name}'",), count=count
    )


CLAIMS = {
    "one 1g.10gb": [ClaimSpec((DeviceRequest("mig", (profile("1g.10gb"),)),))],
    "one 3g.40gb": [ClaimSpec((DeviceRequest("mig", (profile("3g.40gb"),)),))],
    "two 2g.20gb, one claim": [ClaimSpec((DeviceRequest("mig", (profile("2g.20gb", 2),)),))],
    "3g.40gb + 4g.40gb on one GPU": [
        ClaimSpec(
            (DeviceRequest("a", (profile("3g.40gb"),)), DeviceRequest("b", (profile("4g.40gb"),))),
            (DeviceConstraint((), "gpu.nvidia.com/parentUUID"),),
        )
    ],
    "memory >= 20Gi": [
        ClaimSpec(
            (
                DeviceRequest(
                    "mig",
                    (
                        DeviceSubRequest(
                            "mig.nvidia.com",
                            ("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('20Gi')) >= 0",),
                        ),
                    ),
                ),
            )
        )
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    slices = [parse_resource_slice(s) for s in dynamic_mig_slices(NODE, model_named("H100-80GB"), 8)]
    in_use = {(DRIVER, NODE, f"gpu-{g}-mig-{name}") for g in range(4) for name in ("1g10gb-19-0", "1g20gb-15-2")}
    kept = prepare(pools_of(slices, NODE))

    def rate(call: Callable[[], object], rounds: int) -> float:
        start = time.perf_counter()
        for _ in range(rounds):
            call()
        return rounds / (time.perf_counter() - start)

    print(f"{sum(len(s.devices) for s in slices)} devices, {len(in_use)} in use; allocations per second")
    print(f"{'claims':32} {'cold':>9} {'new pools':>9} {'warm':>9}  steps  first device")
    for label, claims in CLAIMS.items():
        outcome = allocate(claims, kept, in_use, CLASSES)
        assert outcome.result is Result.ALLOCATED, outcome

        def cold(claims: list[ClaimSpec] = claims) -> None:
            CACHES.clear()
            allocate(claims, pools_of(slices, NODE), in_use, CLASSES)

        def new_pools(claims: list[ClaimSpec] = claims) -> None:
            allocate(claims, pools_of(slices, NODE), in_use, CLASSES)

        def warm(claims: list[ClaimSpec] = claims) -> None:
            allocate(claims, kept, in_use, CLASSES)

        slow = max(1, args.rounds // 20)
        print(
            f"{label:32} {rate(cold, slow):9,.0f} {rate(new_pools, slow):9,.0f} {rate(warm, args.rounds):9,.0f}"
            f"  {outcome.steps:5}  {outcome.claims[0][0].device}"
        )


if __name__ == "__main__":
    main()
