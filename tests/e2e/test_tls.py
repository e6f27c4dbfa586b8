"""kube-scheduler reaches the extender over mutual TLS, with the shipped extender-mode configuration.

The shipped KubeSchedulerConfiguration gets what docs/security.md tells an operator to add: ``enableHTTPS: true``
and a ``tlsConfig`` with ``caData`` (the CA of the extender's serving certificate) and ``certFile``/``keyFile``
(kube-scheduler's client certificate). The extender serves a Secret-volume-shaped directory, whose serving
certificate is rotated while scheduling goes on.
"""

from __future__ import annotations

import base64
import re
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import ControlPlane, Extender, Kube, scheduler_config, wait_for
from tests.server.test_tls import Authority, Issued, SecretVolume, served_sha256

H100 = "NVIDIA-H100-80GB-HBM3"
MIG_1G = "nvidia.com/mig-1g.10gb"


class HttpsExtender(Extender):
    """The harness's extender subprocess, serving HTTPS and asking for client certificates."""

    def __init__(self, plane: ControlPlane, workdir: Path, volume: SecretVolume, trust: ssl.SSLContext) -> None:
        super().__init__(
            plane,
            workdir,
            [
                "--tls-cert-file",
                str(volume.path("tls.crt")),
                "--tls-key-file",
                str(volume.path("tls.key")),
                "--tls-client-ca-file",
                str(volume.path("ca.crt")),
                "--tls-reload-interval-s",
                "1",
            ],
        )
        self.trust = trust

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _ready(self) -> bool:  # /readyz is an open path: the server certificate is checked, no client one is needed
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"extender exited {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2, context=self.trust) as response:
                return bool(response.status == 200)
        except OSError:
            return False


def _get(url: str, context: ssl.SSLContext) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = "^" + re.escape(name) + (re.escape("{" + labels + "}") if labels else r"(?:\{[^}]*\})?") + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name}{{{labels}}} not exported"
    return float(found.group(1))


@pytest.fixture
def pki(workdir: Path) -> dict[str, object]:
    serving_ca = Authority("mig-extender serving CA")
    client_ca = Authority("kube-scheduler client CA")
    scheduler_client = client_ca.issue("system:kube-scheduler", client=True)
    cert, key = scheduler_client.write(workdir / "scheduler-client")
    return {
        "serving_ca": serving_ca,
        "client_ca": client_ca,
        "scheduler_cert": cert,
        "scheduler_key": key,
        # the test's own clients: one like kube-scheduler, one without a certificate, one of another CA
        "with_cert": serving_ca.client_context(client_ca.issue("probe", client=True), workdir),
        "anonymous": serving_ca.client_context(),
        "impostor": serving_ca.client_context(Authority("rogue CA").issue("kube-scheduler", client=True), workdir),
    }


def _publish(volume: SecretVolume, served: Issued, key_of: Issued, client_ca: Authority) -> None:
    volume.publish({"tls.crt": served.cert_pem, "tls.key": key_of.key_pem, "ca.crt": client_ca.pem})


def _start_scheduler(plane: ControlPlane, workdir: Path, url: str, pki: dict[str, object], name: str) -> object:
    serving_ca = pki["serving_ca"]
    assert isinstance(serving_ca, Authority)
    config = scheduler_config("extender", url, plane.kubeconfig)
    (extender,) = config["extenders"]
    extender["enableHTTPS"] = True
    extender["tlsConfig"] = {
        "caData": base64.b64encode(serving_ca.pem).decode(),
        "certFile": str(pki["scheduler_cert"]),
        "keyFile": str(pki["scheduler_key"]),
    }
    path = workdir / f"scheduler-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return plane.start_scheduler(path, name)


def test_kube_scheduler_calls_the_extender_over_mutual_tls_through_a_certificate_rotation(
    plane: ControlPlane, kube: Kube, schedulers: list[object], workdir: Path, pki: dict[str, object]
) -> None:
    serving_ca, client_ca = pki["serving_ca"], pki["client_ca"]
    assert isinstance(serving_ca, Authority) and isinstance(client_ca, Authority)
    with_cert, anonymous, impostor = (pki[k] for k in ("with_cert", "anonymous", "impostor"))
    assert isinstance(with_cert, ssl.SSLContext) and isinstance(anonymous, ssl.SSLContext)
    assert isinstance(impostor, ssl.SSLContext)
    first, second, third = serving_ca.issue("one"), serving_ca.issue("two"), serving_ca.issue("three")
    volume = SecretVolume(workdir / "secret")
    _publish(volume, first, first, client_ca)

    kube.create_node("gpu-a", H100, config="all-1g.10gb")
    extender = HttpsExtender(plane, workdir, volume, anonymous)
    extender.start()
    try:
        schedulers.append(_start_scheduler(plane, workdir, extender.url, pki, "tls-1"))
        kube.create_pod("before", {MIG_1G: 1})
        assert kube.wait_bound("before") == "gpu-a"
        status, metrics = _get(extender.url + "/metrics", with_cert)
        assert status == 200
        assert _metric(metrics, "mig_extender_request_duration_seconds_count", 'verb="filter"') >= 1

        # refused: no client certificate (HTTP 403 with the reason), or one from another CA (no handshake)
        status, body = _get(extender.url + "/metrics", anonymous)
        assert status == 403 and "client certificate is required" in body
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            _get(extender.url + "/healthz", impostor)
        # and a plain-HTTP client gets no answer from the TLS port
        with pytest.raises((ConnectionError, urllib.error.URLError, OSError)):
            _get(extender.url.replace("https://", "http://") + "/healthz", anonymous)

        # a bad pair lands on the volume first (new certificate, old key): logged, counted, the old pair serves
        assert served_sha256(extender.port, anonymous) == first.sha256
        _publish(volume, second, first, client_ca)

        def tls_reloads(result: str) -> float:
            text = _get(extender.url + "/metrics", with_cert)[1]
            return _metric(text, "mig_extender_tls_reloads_total", f'result="{result}"')

        wait_for("the bad pair to be rejected", lambda: tls_reloads("error") == 1, timeout=10)
        assert served_sha256(extender.port, anonymous) == first.sha256
        assert "TLS files changed but cannot be used" in extender.log() and "do not match" in extender.log()

        # the real rotation: picked up within the poll interval (1 s here, 5 s by default)
        _publish(volume, second, second, client_ca)
        rotated_at = time.monotonic()
        wait_for(
            "the new certificate served", lambda: served_sha256(extender.port, anonymous) == second.sha256, 10, 0.05
        )
        pickup_s = time.monotonic() - rotated_at
        assert pickup_s < 3.0, pickup_s
        print(f"rotated certificate served after {pickup_s:.2f} s (tls_reload_interval_s 1)")

        # scheduling goes on: on kube-scheduler's kept-alive connection ...
        kube.create_pod("during", {MIG_1G: 1})
        assert kube.wait_bound("during") == "gpu-a"
        # ... and on new connections, which verify the new certificate: a fresh kube-scheduler
        for handle in list(schedulers):
            plane.stop_scheduler(handle)  # type: ignore[arg-type]
            schedulers.remove(handle)
        _publish(volume, third, third, client_ca)
        wait_for("the third certificate served", lambda: served_sha256(extender.port, anonymous) == third.sha256, 10)
        schedulers.append(_start_scheduler(plane, workdir, extender.url, pki, "tls-2"))
        kube.create_pod("after", {MIG_1G: 1})
        assert kube.wait_bound("after") == "gpu-a"

        metrics = _get(extender.url + "/metrics", with_cert)[1]
        assert _metric(metrics, "mig_extender_tls_reloads_total", 'result="ok"') == 2
        assert _metric(metrics, "mig_extender_client_certificate_refusals_total") >= 1
        assert "Traceback" not in extender.log()
    finally:
        extender.stop()
