"""HTTPS: start-up errors that name the file, client certificates, and certificates rotated on disk.

Certificates are made here with ``cryptography`` (EC P-256: instant to generate). The rotation tests lay the
files out as the kubelet does for a Secret volume (``tls.crt -> ..data/tls.crt``, ``..data`` a symlink swapped
atomically to a new timestamped directory), and also overwrite plain files in place.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from extender.server.tls import CertificateReloader, TlsError, TlsFiles, build_context
from extender.settings import SettingsError, load_settings
from extender.view.store import ClusterView
from tests.conftest import DEMO_SNAPSHOT
from tests.server.test_slow_clients import (
    FILTER_BODY,
    HOST,
    ServerFactory,
    http_request,
    read_response,
    request,
    servers,
)
from tests.support import free_port

# --- a small PKI -------------------------------------------------------------------------------------------------


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def write(self, directory: Path, cert_name: str = "tls.crt", key_name: str = "tls.key") -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / cert_name).write_bytes(self.cert_pem)
        (directory / key_name).write_bytes(self.key_pem)
        return directory / cert_name, directory / key_name


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Authority:
    """A CA that issues server certificates (for 127.0.0.1 and localhost) and client certificates."""

    common_name: str
    issued: Issued = field(init=False)

    def __post_init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(self.common_name))
            .issuer_name(_name(self.common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        self.issued = Issued(cert, key)

    @property
    def pem(self) -> bytes:
        return self.issued.cert_pem

    def issue(self, common_name: str, *, client: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.issued.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
        )
        if not client:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return Issued(builder.sign(self.issued.key, hashes.SHA256()), key)

    def client_context(self, client: Issued | None = None, workdir: Path | None = None) -> ssl.SSLContext:
        """A client that trusts this CA (and presents ``client``, written under ``workdir``)."""
        context = ssl.create_default_context(cadata=self.pem.decode())
        if client is not None:
            assert workdir is not None
            cert, key = client.write(workdir / f"client-{client.sha256[:12]}")
            context.load_cert_chain(cert, key)
        return context


class SecretVolume:
    """A directory laid out as the kubelet lays out a Secret volume; :meth:`publish` swaps it atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.generation = 0

    def publish(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        version = self.root / f"..2026_{self.generation:04d}"
        version.mkdir()
        for name, data in files.items():
            (version / name).write_bytes(data)
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(Path("..data") / name)
        staging = self.root / "..data_tmp"
        staging.symlink_to(version.name)
        os.replace(staging, self.root / "..data")  # rename(2) over the old symlink: atomic

    def path(self, name: str) -> Path:
        return self.root / name


def served_sha256(port: int, context: ssl.SSLContext) -> str:
    """The fingerprint of the certificate a new connection is served (blocking; for threads and e2e tests)."""
    import socket

    with (
        socket.create_connection((HOST, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


async def served_sha256_async(port: int, context: ssl.SSLContext) -> str:
    _, writer = await asyncio.open_connection(HOST, port, ssl=context, server_hostname="localhost")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return hashlib.sha256(der).hexdigest()
    finally:
        writer.close()


@pytest.fixture
def ca() -> Authority:
    return Authority("mig-extender test CA")


@pytest.fixture
async def serve(demo_view: ClusterView) -> AsyncIterator[ServerFactory]:
    async with servers(demo_view) as factory:
        yield factory


# --- start-up errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "tls_cert_file {d}/missing.crt: no such file"),
        ("directory", "tls_cert_file {d}: is a directory, not a PEM file"),
        ("not-pem", "tls_cert_file {d}/tls.key: no PEM certificate in it"),
        ("mismatch", "tls_cert_file {d}/tls.crt and tls_key_file {d}/other.key do not match"),
        ("encrypted", "tls_key_file {d}/encrypted.key: the key is encrypted"),
        ("bad-ca", "tls_client_ca_file {d}/tls.key: no PEM certificate in it"),
        ("missing-ca", "tls_client_ca_file {d}/ca.crt: no such file"),
    ],
)
def test_unusable_files_are_named_in_the_error(ca: Authority, tmp_path: Path, case: str, message: str) -> None:
    cert, key = ca.issue("server").write(tmp_path)
    _, other_key = ca.issue("other").write(tmp_path, "other.crt", "other.key")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        ca.issue("x").key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    files = {
        "missing": TlsFiles(str(tmp_path / "missing.crt"), str(key)),
        "directory": TlsFiles(str(tmp_path), str(key)),
        "not-pem": TlsFiles(str(key), str(key)),
        "mismatch": TlsFiles(str(cert), str(other_key)),
        "encrypted": TlsFiles(str(cert), str(encrypted)),
        "bad-ca": TlsFiles(str(cert), str(key), str(key)),
        "missing-ca": TlsFiles(str(cert), str(key), str(tmp_path / "ca.crt")),
    }[case]
    with pytest.raises(TlsError) as raised:
        build_context(files)
    assert message.format(d=tmp_path) in str(raised.value)


def test_cert_and_key_come_together_and_client_cas_need_them() -> None:
    with pytest.raises(SettingsError, match="tls_cert_file and tls_key_file: give both"):
        load_settings({"tls_cert_file": "/tls/tls.crt"}, environ={})
    with pytest.raises(SettingsError, match="tls_client_ca_file: needs tls_cert_file and tls_key_file"):
        load_settings({"tls_client_ca_file": "/tls/ca.crt"}, environ={})
    with pytest.raises(SettingsError, match="tls_open_paths: paths start with '/'"):
        load_settings({"tls_open_paths": "/healthz,readyz"}, environ={})


@pytest.mark.parametrize("case", ["missing", "mismatch"])
def test_serve_exits_2_and_names_the_file(ca: Authority, tmp_path: Path, case: str) -> None:
    cert, _ = ca.issue("server").write(tmp_path)
    _, other_key = ca.issue("other").write(tmp_path, "other.crt", "other.key")
    cert_arg, key_arg, expected = {
        "missing": ("/nonexistent/tls.crt", str(other_key), "tls_cert_file /nonexistent/tls.crt: no such file"),
        "mismatch": (str(cert), str(other_key), f"tls_cert_file {cert} and tls_key_file {other_key} do not match"),
    }[case]
    result = subprocess.run(  # noqa: PLW1510 - the exit code is what is tested
        [
            sys.executable,
            "-m",
            "extender",
            "serve",
            "--snapshot",
            str(DEMO_SNAPSHOT),
            "--host",
            HOST,
            "--port",
            str(free_port()),
            "--tls-cert-file",
            cert_arg,
            "--tls-key-file",
            key_arg,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"mig-extender: {expected}" in result.stderr


# --- serving -----------------------------------------------------------------------------------------------------


@pytest.fixture
def reloaders() -> Iterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()


async def _https_server(
    serve: ServerFactory, reloaders: list[asyncio.Task[None]], files: TlsFiles, **settings: object
) -> tuple[int, CertificateReloader]:
    reloader = CertificateReloader(files, interval_s=0.1)
    reloaders.append(asyncio.create_task(reloader.run()))
    server = await serve(
        reloader.listening_context,
        tls_cert_file=files.cert_file,
        tls_key_file=files.key_file,
        tls_client_ca_file=files.client_ca_file,
        **settings,
    )
    return server.port, reloader


async def _wait_served(port: int, context: ssl.SSLContext, sha256: str, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while (served := await served_sha256_async(port, context)) != sha256:
        assert time.monotonic() - started < timeout, f"still serving {served}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_certificate_rotated_on_a_secret_volume_is_served_without_dropping_connections(
    ca: Authority, tmp_path: Path, serve: ServerFactory, reloaders: list[asyncio.Task[None]]
) -> None:
    first, second, third = ca.issue("one"), ca.issue("two"), ca.issue("three")
    volume = SecretVolume(tmp_path / "secret")
    volume.publish({"tls.crt": first.cert_pem, "tls.key": first.key_pem})
    files = TlsFiles(str(volume.path("tls.crt")), str(volume.path("tls.key")))
    port, reloader = await _https_server(serve, reloaders, files)
    trust = ca.client_context()
    assert await served_sha256_async(port, trust) == first.sha256

    # a keep-alive connection opened before the rotation
    reader, writer = await asyncio.open_connection(HOST, port, ssl=trust, server_hostname="localhost")
    writer.write(http_request("POST", "/filter", FILTER_BODY, keep_alive=True))
    assert (await read_response(reader))[0] == 200

    volume.publish({"tls.crt": second.cert_pem, "tls.key": second.key_pem})
    picked_up = await _wait_served(port, trust, second.sha256)
    assert picked_up < 1.0  # polled every 0.1 s here (5 s by default)
    assert reloader.stats.reloads_ok == 1 and reloader.stats.fingerprint == second.sha256

    # the old connection goes on, with the certificate it started with
    writer.write(http_request("POST", "/filter", FILTER_BODY, keep_alive=True))
    assert (await read_response(reader))[0] == 200
    old_der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    assert hashlib.sha256(old_der).hexdigest() == first.sha256
    writer.close()

    # a bad pair (third's certificate, first's key) is refused: the second pair keeps serving
    volume.publish({"tls.crt": third.cert_pem, "tls.key": first.key_pem})
    await asyncio.sleep(0.5)
    assert reloader.stats.reload_errors == 1 and "do not match" in reloader.stats.last_error
    assert await served_sha256_async(port, trust) == second.sha256
    assert (await request(port, "GET", "/healthz", ssl_context=trust))[0] == 200

    volume.publish({"tls.crt": third.cert_pem, "tls.key": third.key_pem})
    await _wait_served(port, trust, third.sha256)
    assert reloader.stats.reloads_ok == 2


async def test_plain_files_overwritten_in_place_are_picked_up(
    ca: Authority, tmp_path: Path, serve: ServerFactory, reloaders: list[asyncio.Task[None]]
) -> None:
    first, second = ca.issue("one"), ca.issue("two")
    cert, key = first.write(tmp_path)
    port, reloader = await _https_server(serve, reloaders, TlsFiles(str(cert), str(key)))
    trust = ca.client_context()
    cert.write_bytes(second.cert_pem)  # the certificate first: the pair mismatches until the key follows
    await asyncio.sleep(0.3)
    assert await served_sha256_async(port, trust) == first.sha256
    key.write_bytes(second.key_pem)
    await _wait_served(port, trust, second.sha256)
    assert reloader.stats.reloads_ok == 1


async def _refused(port: int, context: ssl.SSLContext) -> bool:
    """True if the TLS connection fails or is closed before any HTTP answer."""
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(HOST, port, ssl=context, server_hostname="localhost")
            writer.write(http_request("GET", "/healthz"))
            first_line = await reader.readline()  # TLS 1.3: the client learns of the rejection here
            writer.close()
            return first_line == b""
    except (ssl.SSLError, ConnectionError):
        return True


async def test_client_certificates_are_required_outside_the_open_paths(
    ca: Authority, tmp_path: Path, serve: ServerFactory, reloaders: list[asyncio.Task[None]]
) -> None:
    clients = Authority("scheduler client CA")
    rogue = Authority("rogue CA")
    cert, key = ca.issue("server").write(tmp_path / "tls")
    client_ca = tmp_path / "tls" / "client-ca.crt"
    client_ca.write_bytes(clients.pem)
    port, _ = await _https_server(serve, reloaders, TlsFiles(str(cert), str(key), str(client_ca)))

    anonymous = ca.client_context()
    scheduler = ca.client_context(clients.issue("kube-scheduler", client=True), tmp_path)
    impostor = ca.client_context(rogue.issue("kube-scheduler", client=True), tmp_path)

    # no certificate: the probes' paths answer, the rest is refused with a reason
    assert (await request(port, "GET", "/healthz", ssl_context=anonymous))[0] == 200
    assert (await request(port, "GET", "/readyz", ssl_context=anonymous))[0] == 200
    status, body = await request(port, "POST", "/filter", FILTER_BODY, ssl_context=anonymous)
    assert status == 403 and b"client certificate is required" in body
    assert (await request(port, "GET", "/metrics", ssl_context=anonymous))[0] == 403
    # a certificate of the right CA
    status, body = await request(port, "POST", "/filter", FILTER_BODY, ssl_context=scheduler)
    assert status == 200 and b"h100-exact" in body
    assert (await request(port, "GET", "/metrics", ssl_context=scheduler))[0] == 200
    # a certificate of another CA: the handshake fails, not even the open paths answer
    assert await _refused(port, impostor)

    # the client CA rotates too: the old CA's clients are refused from then on
    successor = Authority("scheduler client CA 2")
    client_ca.write_bytes(successor.pem)
    after_rotation = ca.client_context(successor.issue("kube-scheduler", client=True), tmp_path)
    deadline = time.monotonic() + 5
    while not await _refused(port, scheduler):
        assert time.monotonic() < deadline, "the old client CA is still trusted"
        await asyncio.sleep(0.05)
    status, _ = await request(port, "POST", "/filter", FILTER_BODY, ssl_context=after_rotation)
    assert status == 200


async def test_plain_http_stays_the_default(serve: ServerFactory) -> None:
    server = await serve()
    assert (await request(server.port, "GET", "/healthz"))[0] == 200
    assert server.site.name.startswith("http://")


# --- logging -----------------------------------------------------------------------------------------------------


def test_debug_logging_never_turns_on_api_response_bodies() -> None:
    # kubernetes_asyncio logs whole API responses (pod specs, env values included) at DEBUG.
    import logging

    from extender.server.run import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(load_settings({"log_level": "DEBUG"}, environ={}).logging)
        assert logging.getLogger("extender.server.app").isEnabledFor(logging.DEBUG)
        for name in ("kubernetes_asyncio.client.rest", "kubernetes_asyncio.config.kube_config"):
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        logging.getLogger("kubernetes_asyncio").setLevel(logging.NOTSET)
