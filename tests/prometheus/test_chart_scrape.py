"""A real Prometheus scrapes the extender's metrics listener in secondary-scheduler mode, with the scrape config
that the chart's ServiceMonitor implies.

The chart is rendered (``helm template``, mode secondary-scheduler, serviceMonitor on) and followed the way the
Prometheus Operator does: the ServiceMonitor's selector picks the Service, its endpoint's port name the Service
port, whose targetPort names the sidecar's container port; the job label is the Service's ``jobLabel`` label. The
sidecar runs as a local process with the container's arguments (its listeners moved to free loopback ports)
over the demo snapshot; Prometheus scrapes the target that stands for the container port.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm import chart
from tests.prometheus.test_prometheus import DEMO, Process, answers_ok, ensure_prometheus, http, start, wait_for
from tests.support import free_port

pytestmark = [pytest.mark.prometheus, pytest.mark.helm]


def selected(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def scrape_target(docs: list[dict[str, Any]]) -> tuple[str, dict[str, Any], dict[str, Any], int]:
    """(job name, endpoint, extender container, container port) of the ServiceMonitor's secondary-mode target."""
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    spec = monitor["spec"]
    services = [
        d for d in docs if d["kind"] == "Service" and selected(spec["selector"]["matchLabels"], d["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in services] == ["mig-scheduler-metrics"]
    (service,) = services
    assert service["metadata"]["namespace"] in spec["namespaceSelector"]["matchNames"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    (endpoint,) = [e for e in spec["endpoints"] if e["port"] in ports]
    target_port = ports[endpoint["port"]]["targetPort"]
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and selected(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    ]
    matches = [
        (c, p["containerPort"])
        for c in deployment["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
        if p["name"] == target_port
    ]
    assert len(matches) == 1, matches
    container, port = matches[0]
    job = service["metadata"]["labels"][spec["jobLabel"]]
    return job, endpoint, container, port


def test_prometheus_scrapes_the_secondary_schedulers_extender_through_its_service(tmp_path: Path) -> None:
    ensure_prometheus()
    docs = chart.template({"mode": "secondary-scheduler", "serviceMonitor.enabled": True})
    job, endpoint, container, container_port = scrape_target(docs)
    assert job == "mig-extender"  # what the alerts and the dashboard select
    assert container["name"] == "mig-extender"
    args = list(container["args"])
    assert args[args.index("--host") + 1] == "127.0.0.1", "the verbs stay on the pod's loopback"
    assert int(args[args.index("--metrics-port") + 1]) == container_port
    verbs, metrics = free_port(), free_port()
    args[args.index("--port") + 1] = str(verbs)
    args[args.index("--metrics-port") + 1] = str(metrics)  # the container port, here on the test's loopback
    args += ["--metrics-host", "127.0.0.1", "--snapshot", str(DEMO)]

    prometheus_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},  # the ServiceMonitor's 30 s, shortened
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": endpoint["path"],
                "scheme": endpoint.get("scheme", "http"),
                "static_configs": [{"targets": [f"127.0.0.1:{metrics}"]}],
            }
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    processes: list[Process] = []
    try:
        extender = start("extender", [sys.executable, "-m", "extender", *args], tmp_path / "extender.log")
        processes.append(extender)
        wait_for("the metrics listener", lambda: extender.alive() and answers_ok(f"http://127.0.0.1:{metrics}/readyz"))
        prometheus = start(
            "prometheus",
            [
                "prometheus",
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            tmp_path / "prometheus.log",
        )
        processes.append(prometheus)
        url = f"http://127.0.0.1:{prometheus_port}"
        wait_for("Prometheus ready", lambda: prometheus.alive() and answers_ok(url + "/-/ready"))

        def result(expr: str) -> list[Any]:
            status, body = http(f"{url}/api/v1/query?query={expr}")
            assert status == 200 and body["status"] == "success", body
            return list(body["data"]["result"])

        wait_for("up == 1 for the metrics listener", lambda: result(f'up{{job="{job}"}}==1'))
        series = wait_for("the fleet's series", lambda: result(f'mig_extender_compute_slices{{job="{job}"}}'))
        assert {s["metric"]["instance"] for s in series} == {f"127.0.0.1:{metrics}"}
        status, _ = http(f"http://127.0.0.1:{metrics}/filter", {"Pod": {}, "NodeNames": []})
        assert status == 404, "the metrics listener serves no verbs"
    finally:
        for process in reversed(processes):
            process.stop()
