"""HTTPS for the extender: a server certificate reloaded from disk without downtime, optional client certificates.

The files are those of a Kubernetes Secret mounted as a volume (cert-manager's ``tls.crt``/``tls.key``/``ca.crt``).
The kubelet replaces such files by swapping a symlink, so a change shows as a new inode; a file edited in
place shows as a new size or mtime. :class:`CertificateReloader` polls those, and on a change builds a
complete new :class:`ssl.SSLContext` from the files. Only a context that loaded without error is used, so a
half-written or mismatched pair is logged and counted while the previous pair keeps serving.

The listening socket keeps one context for its whole life (asyncio takes it at ``create_server``). New
handshakes reach the current pair through that context's SNI callback, which OpenSSL runs on every
ClientHello, with or without a server name, before it picks the certificate: the callback moves the
connection onto the newest context (``SSLObject.context`` may be assigned there, per the ``ssl`` docs).
Established connections keep the pair they started with, so a reload drops no connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_END_CERTIFICATE = b"-----END CERTIFICATE-----"
_PEM_KEY_MARKERS = (b"PRIVATE KEY-----",)
_ENCRYPTED_KEY_MARKERS = (b"ENCRYPTED PRIVATE KEY", b"Proc-Type: 4,ENCRYPTED")

Signature = tuple[tuple[int, int, int, int] | str, ...]


class TlsError(Exception):
    """A TLS file that cannot be used; the message names the setting and the file."""


@dataclass(frozen=True)
class TlsFiles:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    def named(self) -> Iterator[tuple[str, str]]:
        yield "tls_cert_file", self.cert_file
        yield "tls_key_file", self.key_file
        if self.client_ca_file:
            yield "tls_client_ca_file", self.client_ca_file


@dataclass
class TlsStats:
    """What the reloader did, for logs, tests and ``/metrics``."""

    reloads_ok: int = 0
    reload_errors: int = 0
    fingerprint: str = ""
    """SHA-256 of the serving certificate (DER), hex: the value ``openssl x509 -fingerprint -sha256`` shows."""
    loaded_at: float = 0.0
    """Unix time the serving pair was loaded."""
    last_error: str = ""


def _read(setting: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise TlsError(f"{setting} {path}: no such file") from None
    except PermissionError:
        raise TlsError(
            f"{setting} {path}: cannot read it: permission denied (the process runs as uid {os.getuid()})"
        ) from None
    except IsADirectoryError:
        raise TlsError(f"{setting} {path}: is a directory, not a PEM file") from None
    except OSError as exc:
        raise TlsError(f"{setting} {path}: cannot read it: {exc.strerror or exc}") from None


def _first_certificate(data: bytes) -> bytes | None:
    start = data.find(_PEM_CERTIFICATE)
    end = data.find(_PEM_END_CERTIFICATE, start)
    if start < 0 or end < 0:
        return None
    return data[start : end + len(_PEM_END_CERTIFICATE)]


def fingerprint(pem_certificate: bytes) -> str:
    """SHA-256 of a PEM certificate's DER encoding, in hex."""
    der = ssl.PEM_cert_to_DER_cert(pem_certificate.decode("ascii"))
    return hashlib.sha256(der).hexdigest()


def _no_password() -> bytes:
    # Without a password callback OpenSSL would prompt on the terminal for an encrypted key and hang.
    raise TlsError("encrypted")


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc).replace("_", " ").lower()


def build_context(files: TlsFiles) -> tuple[ssl.SSLContext, str]:
    """A server context from the files, and the certificate's fingerprint; :class:`TlsError` if unusable."""
    cert = _read("tls_cert_file", files.cert_file)
    key = _read("tls_key_file", files.key_file)
    first = _first_certificate(cert)
    if first is None:
        raise TlsError(f"tls_cert_file {files.cert_file}: no PEM certificate in it (BEGIN CERTIFICATE)")
    if not any(marker in key for marker in _PEM_KEY_MARKERS):
        raise TlsError(f"tls_key_file {files.key_file}: no PEM private key in it (BEGIN ... PRIVATE KEY)")
    if any(marker in key for marker in _ENCRYPTED_KEY_MARKERS):
        raise TlsError(f"tls_key_file {files.key_file}: the key is encrypted; give it unencrypted (as in a Secret)")
    try:
        digest = fingerprint(first)
    except (ValueError, UnicodeDecodeError):
        raise TlsError(f"tls_cert_file {files.cert_file}: the first certificate is not valid PEM") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert_file, files.key_file, password=_no_password)
    except TlsError:
        raise TlsError(f"tls_key_file {files.key_file}: the key is encrypted; give it unencrypted") from None
    except ssl.SSLError as exc:
        reason = _reason(exc)
        if "mismatch" in reason:
            raise TlsError(
                f"tls_cert_file {files.cert_file} and tls_key_file {files.key_file} do not match: "
                "the key is not the certificate's"
            ) from None
        raise TlsError(f"tls_cert_file {files.cert_file} / tls_key_file {files.key_file}: {reason}") from None
    except OSError as exc:  # the file went away between the read above and OpenSSL's own read
        raise TlsError(f"tls_cert_file {files.cert_file} / tls_key_file {files.key_file}: {exc}") from None
    if files.client_ca_file:
        ca = _read("tls_client_ca_file", files.client_ca_file)
        if _first_certificate(ca) is None:
            raise TlsError(f"tls_client_ca_file {files.client_ca_file}: no PEM certificate in it (BEGIN CERTIFICATE)")
        try:
            context.load_verify_locations(cafile=files.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            reason = _reason(exc) if isinstance(exc, ssl.SSLError) else str(exc)
            raise TlsError(f"tls_client_ca_file {files.client_ca_file}: {reason}") from None
        # OPTIONAL, not REQUIRED: a certificate that is presented must verify (or the handshake fails), and the
        # application answers 403 on every path but tls_open_paths when none was presented. The kubelet's
        # HTTPS probes present none.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context, digest


def _signature(files: TlsFiles) -> Signature:
    marks: list[tuple[int, int, int, int] | str] = []
    for _, path in files.named():
        try:
            st = os.stat(path)  # follows the kubelet's ..data symlinks: a swap is a new inode
        except OSError as exc:
            marks.append(f"{type(exc).__name__}")
            continue
        marks.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(marks)


@dataclass
class CertificateReloader:
    """The listening socket's context, and the newest good context its SNI callback hands new connections to."""

    files: TlsFiles
    interval_s: float = 5.0
    clock: Callable[[], float] = time.time
    stats: TlsStats = field(default_factory=TlsStats)

    def __post_init__(self) -> None:
        self._seen = _signature(self.files)
        context, digest = build_context(self.files)  # TlsError at start-up: the caller exits 2
        context.sni_callback = self._select
        self.listening_context = context
        self._current = context
        self.stats.fingerprint = digest
        self.stats.loaded_at = self.clock()
        log.info(
            "serving HTTPS with %s (sha256 %s)%s",
            self.files.cert_file,
            digest,
            f"; client certificates signed by {self.files.client_ca_file} required"
            if self.files.client_ca_file
            else "",
        )

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def _select(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        current = self._current
        if current is not context:
            connection.context = current

    def check(self) -> bool:
        """Reload if a file changed since the last look; True when a new pair now serves."""
        signature = _signature(self.files)
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            context, digest = build_context(self.files)
        except TlsError as exc:
            self.stats.reload_errors += 1
            self.stats.last_error = str(exc)
            log.error("TLS files changed but cannot be used, still serving sha256 %s: %s", self.stats.fingerprint, exc)
            return False
        if digest == self.stats.fingerprint and self._same_trust(context):
            return False  # touched, not changed
        self._current = context
        previous, self.stats.fingerprint = self.stats.fingerprint, digest
        self.stats.loaded_at = self.clock()
        self.stats.reloads_ok += 1
        self.stats.last_error = ""
        log.info("TLS certificate reloaded from %s: sha256 %s (was %s)", self.files.cert_file, digest, previous)
        return True

    def _same_trust(self, context: ssl.SSLContext) -> bool:
        return context.get_ca_certs(binary_form=True) == self._current.get_ca_certs(binary_form=True)

    async def run(self) -> None:
        """Poll forever (a root task of the server)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.check()
            except Exception:  # never let a surprise stop the polling: the old pair keeps serving
                self.stats.reload_errors += 1
                log.exception("checking the TLS files failed")


class TlsCollector(Collector):
    """``mig_extender_tls_*``: registered only when the extender serves HTTPS."""

    def __init__(self, stats: TlsStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        reloads = CounterMetricFamily(
            "mig_extender_tls_reloads", "Changed TLS files loaded (ok) or rejected (error).", labels=["result"]
        )
        reloads.add_metric(["ok"], self.stats.reloads_ok)
        reloads.add_metric(["error"], self.stats.reload_errors)
        yield reloads
        yield GaugeMetricFamily(
            "mig_extender_tls_certificate_loaded_timestamp_seconds",
            "When the serving certificate was loaded (Unix time).",
            value=self.stats.loaded_at,
        )
