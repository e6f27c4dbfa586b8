"""End-to-end scheduling throughput of the real kube-scheduler, with and without the extender, in one run.

    python scripts/bench_e2e.py [--nodes 500] [--pods 2000] [--json out.json] [--profile extender.speedscope.json]

Starts a loopback control plane (scripts/controlplane.py), creates N H100 nodes with 8 GPUs each
(``all-balanced``) and P pending MIG pods (a mix of 1g, 2g and 3g), then starts kube-scheduler with the
shipped extender-mode configuration and measures the time from its start until every pod is bound. The
same pods are then deleted, recreated and scheduled by the same profile without the extender. Rounds
alternate (baseline, extender, baseline, extender...) so that machine noise hits both alike.

Each round also records the CPU seconds (user + system, from ``/proc/<pid>/stat``) that each process spent
from the scheduler's start until the last pod was bound, per scheduled pod: unlike wall time, that figure
does not depend on what else the machine runs. ``--profile FILE`` samples the extender with py-spy during the
rounds with it (speedscope JSON; py-spy needs ptrace, as root or with CAP_SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extender.settings import Settings  # noqa: E402
from tests.e2e.harness import NAMESPACE, ControlPlane, Extender, Kube, default_bin_dir, start_scheduler  # noqa: E402

MIX = ("nvidia.com/mig-1g.10gb", "nvidia.com/mig-1g.10gb", "nvidia.com/mig-2g.20gb", "nvidia.com/mig-3g.40gb")


class BoundPods:
    """The pods of the namespace bound so far, followed by one watch stream.

    Polling a list instead would cost the API server and etcd a read of every pod each time, more often the
    longer a round lasts: the slower variant would pay more per pod for the benchmark's own reads."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.bound: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        listed = plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?limit=1")[1]
        self._version = listed["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def count(self) -> int:
        with self._lock:
            return len(self.bound)

    def clear(self) -> None:
        with self._lock:
            self.bound.clear()

    def close(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        while not self._stop.is_set():
            url = f"{self.plane.server}/api/v1/namespaces/{NAMESPACE}/pods?watch=1&resourceVersion={self._version}"
            request = urllib.request.Request(url)
            request.add_header("Authorization", f"Bearer {self.plane.token}")
            try:
                with urllib.request.urlopen(request, context=self.plane.ssl_context(), timeout=30) as stream:
                    for line in stream:
                        self._apply(json.loads(line))
            except (OSError, ValueError):
                time.sleep(0.2)  # a cut or an idle timeout: watch again from the last version seen

    def _apply(self, event: dict[str, object]) -> None:
        pod = event.get("object")
        if not isinstance(pod, dict) or event.get("type") == "ERROR":
            return
        metadata = pod.get("metadata") or {}
        self._version = metadata.get("resourceVersion", self._version)
        name = metadata.get("name")
        with self._lock:
            if event.get("type") == "DELETED":
                self.bound.discard(name)
            elif (pod.get("spec") or {}).get("nodeName"):
                self.bound.add(name)


def create_pods(kube: Kube, count: int) -> None:
    for i in range(count):
        kube.create_pod(f"p-{i:05d}", {MIX[i % len(MIX)]: 1})


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far."""
    # Fields after the command name (which may hold spaces, so split after its closing parenthesis):
    # utime and stime are the 14th and 15th fields of the line, the 12th and 13th after the name.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def process_name(name: str) -> str:
    """``kube-scheduler[extender-...]`` -> ``kube-scheduler``: one key per kind of process across rounds."""
    return name.partition("[")[0]


_REQUEST_TOTAL = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def api_requests(plane: ControlPlane) -> Counter[str]:
    """kube-apiserver's requests served so far, by verb and resource (``POST pods/binding``), from its metrics."""
    status, text = plane.request("GET", "/metrics")
    counts: Counter[str] = Counter()
    if status != 200 or not isinstance(text, str):
        return counts
    for match in _REQUEST_TOTAL.finditer(text):
        labels = dict(_LABEL.findall(match["labels"]))
        resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        counts[f"{labels.get('verb', '?')} {resource or labels.get('path', '?')}"] += int(float(match["value"]))
    return counts


def one_round(
    plane: ControlPlane,
    kube: Kube,
    workdir: Path,
    pods: int,
    extender_url: str | None,
    qps: int | None,
    others: Callable[[], dict[str, int]],
    bound: BoundPods,
) -> tuple[float, dict[str, float], Counter[str]]:
    """Seconds until every pod is bound, each process's CPU seconds over that time, and the API requests."""
    kube.call("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods", ok=(200,))
    while kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?limit=1")["items"]:
        time.sleep(0.2)
    bound.clear()
    create_pods(kube, pods)
    before = {name: cpu_seconds(pid) for name, pid in {**plane.pids(), **others()}.items()}
    requests_before = api_requests(plane)
    started = time.monotonic()
    handle = start_scheduler(plane, workdir, "extender", extender_url, qps=qps)
    try:
        while bound.count() < pods:
            if time.monotonic() - started > 900:
                raise SystemExit(f"only {bound.count()} of {pods} pods bound after 900 s")
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        after = {name: cpu_seconds(pid) for name, pid in {**plane.pids(), **others()}.items()}
        spent = {process_name(name): seconds - before.get(name, 0.0) for name, seconds in after.items()}
        return elapsed, spent, api_requests(plane) - requests_before
    finally:
        plane.stop_scheduler(handle)


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--format", "speedscope", "--output", str(out), "--rate", "200"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    """py-spy writes its file on SIGINT."""
    os.killpg(profiler.pid, signal.SIGINT)
    try:
        profiler.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(profiler.pid, signal.SIGKILL)
        profiler.wait()


def requests_per_pod(rounds: list[Counter[str]], pods: int) -> dict[str, float]:
    """Median over rounds of the API requests per scheduled pod, by verb and resource (0.01 and up)."""
    keys = {key for counts in rounds for key in counts}
    per_pod = {key: round(statistics.median(counts[key] for counts in rounds) / pods, 2) for key in keys}
    return dict(sorted(((k, v) for k, v in per_pod.items() if v >= 0.01), key=lambda item: -item[1]))


def cpu_per_pod(rounds: list[dict[str, float]], pods: int) -> dict[str, float]:
    """Median over rounds of each process's CPU milliseconds per scheduled pod."""
    names = sorted({name for spent in rounds for name in spent})
    return {name: round(1000 * statistics.median(spent.get(name, 0.0) for spent in rounds) / pods, 3) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each, alternating")
    parser.add_argument("--qps", type=int, help="kube-scheduler's API client rate (default: its own, 50/s)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--profile", type=Path, help="sample the extender with py-spy into this speedscope file")
    parser.add_argument(
        "--extender-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument of mig-extender serve (repeat it), e.g. --extender-arg=--event-loop=asyncio",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mig-bench-e2e-") as tmp:
        workdir = Path(tmp)
        with ControlPlane(workdir / "plane", default_bin_dir()) as plane:
            kube = Kube(plane)
            kube.ensure_namespace(NAMESPACE)
            for i in range(args.nodes):
                kube.create_node(f"gpu-{i:04d}", "NVIDIA-H100-80GB-HBM3", gpus=8, config="all-balanced")
            # The product's own verdict scan interval, not the e2e harness's 1 s (a test waits on it, users do not).
            scan = f"--pending-scan-s={Settings().annotator.scan_interval_s}"
            extender = Extender(plane, workdir, [scan, *args.extender_arg])
            extender.start()
            assert extender.process is not None
            extender_pid = extender.process.pid
            profiler = start_profiler(extender_pid, args.profile) if args.profile else None
            bound = BoundPods(plane)
            try:
                times: dict[str, list[float]] = {"without": [], "with": []}
                cpu: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
                requests: dict[str, list[Counter[str]]] = {"without": [], "with": []}
                for _ in range(args.rounds):
                    for label, url in (("without", None), ("with", extender.url)):
                        # The extender runs in both (its watches see the pods): its CPU counts only in "with".
                        others = (lambda: {"extender": extender_pid}) if url else dict
                        seconds, spent, served = one_round(
                            plane, kube, workdir, args.pods, url, args.qps, others, bound
                        )
                        times[label].append(seconds)
                        cpu[label].append(spent)
                        requests[label].append(served)
            finally:
                bound.close()
                if profiler is not None:
                    stop_profiler(profiler)
                extender.stop()
    without = statistics.median(times["without"])
    with_ext = statistics.median(times["with"])
    result = {
        "nodes": args.nodes,
        "gpus_per_node": 8,
        "pods": args.pods,
        "scheduler_qps": args.qps or 50,
        "extender_args": [scan, *args.extender_arg],
        "seconds_without": times["without"],
        "seconds_with": times["with"],
        "pods_per_s_without": round(args.pods / without, 1),
        "pods_per_s_with": round(args.pods / with_ext, 1),
        "ratio": round(without / with_ext, 3),
        "cpu_ms_per_pod_without": cpu_per_pod(cpu["without"], args.pods),
        "cpu_ms_per_pod_with": cpu_per_pod(cpu["with"], args.pods),
        "cpu_s_per_round": cpu,
        "api_requests_per_pod_without": requests_per_pod(requests["without"], args.pods),
        "api_requests_per_pod_with": requests_per_pod(requests["with"], args.pods),
    }
    with_cpu = result["cpu_ms_per_pod_with"]
    assert isinstance(with_cpu, dict)
    if with_cpu.get("kube-scheduler"):
        result["extender_cpu_over_scheduler"] = round(with_cpu.get("extender", 0.0) / with_cpu["kube-scheduler"], 3)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
