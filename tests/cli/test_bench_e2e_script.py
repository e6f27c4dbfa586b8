"""scripts/bench_e2e.py: what it reads of each process and of the API server's metrics."""

from __future__ import annotations

import importlib.util
import os
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_bench_e2e() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_e2e_script", REPO / "scripts" / "bench_e2e.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_seconds_counts_what_this_process_spent() -> None:
    bench = load_bench_e2e()
    before = bench.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert 0.2 <= bench.cpu_seconds(os.getpid()) - before < 5


def test_process_names_are_one_key_per_kind_across_rounds() -> None:
    bench = load_bench_e2e()
    assert bench.process_name("kube-scheduler[extender-scheduler-extender-41234]") == "kube-scheduler"
    assert bench.process_name("etcd") == "etcd"


class _Plane:
    def __init__(self, text: str) -> None:
        self.text = text

    def request(self, method: str, path: str) -> tuple[int, str]:
        assert (method, path) == ("GET", "/metrics")
        return 200, self.text


def test_api_requests_are_summed_by_verb_and_resource_over_codes_and_scopes() -> None:
    bench = load_bench_e2e()
    text = "\n".join(
        [
            "# HELP apiserver_request_total Counter of apiserver requests",
            'apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",'
            'scope="resource",subresource="binding",verb="POST",version="v1"} 1999',
            'apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="pods",'
            'scope="resource",subresource="binding",verb="POST",version="v1"} 1',
            'apiserver_request_total{code="200",component="apiserver",group="",resource="pods",'
            'scope="namespace",subresource="",verb="LIST",version="v1"} 2',
        ]
    )
    counts = bench.api_requests(_Plane(text))
    assert counts == Counter({"POST pods/binding": 2000, "LIST pods": 2})


def test_per_pod_figures_are_medians_over_rounds() -> None:
    bench = load_bench_e2e()
    rounds = [Counter({"POST pods/binding": 100, "LIST pods": 1}), Counter({"POST pods/binding": 100, "LIST pods": 3})]
    assert bench.requests_per_pod(rounds, 100) == {"POST pods/binding": 1.0, "LIST pods": 0.02}
    cpu = [{"extender": 1.0, "etcd": 0.2}, {"extender": 3.0, "etcd": 0.4}]
    assert bench.cpu_per_pod(cpu, 1000) == {"etcd": 0.3, "extender": 2.0}
