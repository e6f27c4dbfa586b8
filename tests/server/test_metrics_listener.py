"""The metrics listener (setting metrics_port): ``mig-extender serve`` with the verbs on one port and /metrics and
the probes on another, as the secondary scheduler's sidecar runs it; and the settings' checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from extender.settings import Settings, SettingsError
from tests.conftest import DEMO_SNAPSHOT
from tests.support import free_port, wait_for

FILTER = {
    "Pod": {
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/mig-3g.40gb": "1"}}}]},
    },
    "Nodes": None,
    "NodeNames": ["h100-exact", "a100-balanced"],
}


class Ports(NamedTuple):
    verbs: int
    metrics: int


def call(port: int, method: str, path: str) -> tuple[int, str]:
    data = json.dumps(FILTER).encode() if method == "POST" else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    ports = Ports(free_port(), free_port())
    log = tmp_path_factory.mktemp("metrics-listener") / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "extender", "serve", "--snapshot", str(DEMO_SNAPSHOT),
                "--host", "127.0.0.1", "--port", str(ports.verbs),
                "--metrics-host", "127.0.0.1", "--metrics-port", str(ports.metrics),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return call(ports.metrics, "GET", "/readyz")[0] == 200
            except OSError:
                return False

        wait_for("the metrics listener ready", ready, timeout=30)
        yield ports
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
    assert process.returncode == 0, log.read_text()


ANSWERS = [
    # (listener, method, path, status, what the body holds)
    ("metrics", "GET", "/metrics", 200, "mig_extender_compute_slices"),
    ("metrics", "GET", "/healthz", 200, "ok"),
    ("metrics", "GET", "/readyz", 200, "ok"),
    ("metrics", "POST", "/filter", 404, "no such path /filter"),  # the verbs are not served there
    ("metrics", "POST", "/prioritize", 404, "served: GET /healthz"),
    ("verbs", "POST", "/filter", 200, "h100-exact"),
    ("verbs", "GET", "/metrics", 200, "mig_extender_compute_slices"),  # still on the main port too
]


@pytest.mark.parametrize(("listener", "method", "path", "status", "holds"), ANSWERS)
def test_each_listener_serves_its_paths(
    served: Ports, listener: str, method: str, path: str, status: int, holds: str
) -> None:
    got, body = call(getattr(served, listener), method, path)
    assert got == status, body
    assert holds in body


def test_both_listeners_count_into_one_registry(served: Ports) -> None:
    call(served.verbs, "POST", "/filter")
    _, text = call(served.metrics, "GET", "/metrics")
    assert 'mig_extender_request_duration_seconds_count{verb="filter"}' in text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"metrics_port": 8888}, "metrics_port: must differ from port"),
        ({"metrics_port": 70000}, "metrics_port: 70000 is outside 1..65535 (or 0 for none)"),
        ({"metrics_port": -1}, "metrics_port: -1 is outside"),
    ],
)
def test_bad_metrics_ports_are_named(values: dict[str, int], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.of(**values)


def test_no_metrics_listener_by_default() -> None:
    assert Settings().server.metrics_port == 0
