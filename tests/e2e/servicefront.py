"""A loopback stand-in for a Service in front of extender replicas: its selector against their Pods' labels.

    with ServiceFront(kube, namespace, {"app.kubernetes.io/name": "mig-extender"}, {"pod-0": 8001}) as front:
        kube-scheduler calls front.url

Every ``refresh_s`` a thread lists the Pods the selector selects (through the API server, as the endpoints
controller watches them) and probes each one's ``/readyz`` (as the kubelet's readiness probe does); only Pods
both selected and ready are endpoints. Each request goes to one endpoint at random, on a connection of its own:
the way a Service spreads kube-scheduler's calls over time (new connections, a replica restarting, a second
kube-scheduler), taken to its worst case. No endpoint: 503, as a Service without endpoints refuses.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Mapping
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from tests.e2e.harness import Kube


class ServiceFront:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        selector: Mapping[str, str],
        ports: Mapping[str, int],
        *,
        refresh_s: float = 0.2,
        seed: int = 7,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.selector = dict(selector)
        self.ports = dict(ports)
        """Pod name -> the loopback port its extender listens on."""
        self.refresh_s = refresh_s
        self.requests: Counter[str] = Counter()
        """Requests sent, per Pod."""
        self.log: list[tuple[float, str, str]] = []
        """(monotonic time, Pod, path) of every request sent on."""
        self._endpoints: list[str] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._stop = threading.Event()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                pod = front.pick(self.path)
                status, data = 503, b'{"error": "no endpoints"}'
                if pod is not None:
                    upstream = HTTPConnection("127.0.0.1", front.ports[pod], timeout=30)
                    try:
                        upstream.request("POST", self.path, body, {"Content-Type": "application/json"})
                        response = upstream.getresponse()
                        status, data = response.status, response.read()
                    except OSError as exc:  # the endpoint died: the caller sees an error, as through a Service
                        status, data = 502, f'{{"error": "{type(exc).__name__}"}}'.encode()
                    finally:
                        upstream.close()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # kube-scheduler gave up on a call (its httpTimeout): nothing to report

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._serving = threading.Thread(target=self.server.serve_forever, name="service-front", daemon=True)
        self._refreshing = threading.Thread(target=self._refresh_forever, name="service-endpoints", daemon=True)

    @property
    def endpoints(self) -> list[str]:
        with self._lock:
            return list(self._endpoints)

    def pick(self, path: str) -> str | None:
        with self._lock:
            if not self._endpoints:
                return None
            pod = self._random.choice(self._endpoints)
            self.requests[pod] += 1
            self.log.append((time.monotonic(), pod, path))
            return pod

    def refresh(self) -> None:
        selector = ",".join(f"{k}={v}" for k, v in self.selector.items())
        query = urllib.parse.urlencode({"labelSelector": selector})
        pods = self.kube.call("GET", f"/api/v1/namespaces/{self.namespace}/pods?{query}")["items"]
        selected = sorted(p["metadata"]["name"] for p in pods if p["metadata"]["name"] in self.ports)
        ready = [name for name in selected if self._ready(self.ports[name])]
        with self._lock:
            self._endpoints = ready

    @staticmethod
    def _ready(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _refresh_forever(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(AssertionError, OSError):  # the API server restarting: keep the last ones
                self.refresh()
            self._stop.wait(self.refresh_s)

    def __enter__(self) -> Self:
        self.refresh()
        self._serving.start()
        self._refreshing.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._refreshing.join(timeout=5)
