"""End-to-end scheduling throughput of the real kube-scheduler, with and without the extender, in one run.

    python scripts/bench_e2e.py [--nodes 500] [--pods 2000] [--json out.json]

Starts a loopback control plane (scripts/controlplane.py), creates N H100 nodes with 8 GPUs each
(``all-balanced``) and P pending MIG pods (a mix of 1g, 2g and 3g), then starts kube-scheduler with the
shipped extender-mode configuration and measures the time from its start until every pod is bound. The
same pods are then deleted, recreated and scheduled by the same profile without the extender. Rounds
alternate (baseline, extender, baseline, extender...) so that machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import NAMESPACE, ControlPlane, Extender, Kube, default_bin_dir, start_scheduler  # noqa: E402

MIX = ("nvidia.com/mig-1g.10gb", "nvidia.com/mig-1g.10gb", "nvidia.com/mig-2g.20gb", "nvidia.com/mig-3g.40gb")


def bound_count(kube: Kube) -> int:
    data = kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?fieldSelector=spec.nodeName!=")
    return len(data["items"])


def create_pods(kube: Kube, count: int) -> None:
    for i in range(count):
        kube.create_pod(f"p-{i:05d}", {MIX[i % len(MIX)]: 1})


def one_round(
    plane: ControlPlane, kube: Kube, workdir: Path, pods: int, extender_url: str | None, qps: int | None
) -> float:
    kube.call("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods", ok=(200,))
    while kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?limit=1")["items"]:
        time.sleep(0.2)
    create_pods(kube, pods)
    started = time.monotonic()
    handle = start_scheduler(plane, workdir, "extender", extender_url, qps=qps)
    try:
        while bound_count(kube) < pods:
            if time.monotonic() - started > 900:
                raise SystemExit(f"only {bound_count(kube)} of {pods} pods bound after 900 s")
            time.sleep(0.25)
        return time.monotonic() - started
    finally:
        plane.stop_scheduler(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each, alternating")
    parser.add_argument("--qps", type=int, help="kube-scheduler's API client rate (default: its own, 50/s)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mig-bench-e2e-") as tmp:
        workdir = Path(tmp)
        with ControlPlane(workdir / "plane", default_bin_dir()) as plane:
            kube = Kube(plane)
            kube.ensure_namespace(NAMESPACE)
            for i in range(args.nodes):
                kube.create_node(f"gpu-{i:04d}", "NVIDIA-H100-80GB-HBM3", gpus=8, config="all-balanced")
            extender = Extender(plane, workdir)
            extender.start()
            try:
                times: dict[str, list[float]] = {"without": [], "with": []}
                for _ in range(args.rounds):
                    times["without"].append(one_round(plane, kube, workdir, args.pods, None, args.qps))
                    times["with"].append(one_round(plane, kube, workdir, args.pods, extender.url, args.qps))
            finally:
                extender.stop()
    without = statistics.median(times["without"])
    with_ext = statistics.median(times["with"])
    result = {
        "nodes": args.nodes,
        "gpus_per_node": 8,
        "pods": args.pods,
        "scheduler_qps": args.qps or 50,
        "seconds_without": times["without"],
        "seconds_with": times["with"],
        "pods_per_s_without": round(args.pods / without, 1),
        "pods_per_s_with": round(args.pods / with_ext, 1),
        "ratio": round(without / with_ext, 3),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
