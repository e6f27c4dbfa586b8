#!/usr/bin/env python3
"""Local Kubernetes control plane (etcd + kube-apiserver + kube-scheduler) on loopback.

Uses the real binaries built by ``scripts/build-control-plane.sh`` (default location
``${MIG_EXTENDER_CACHE:-~/.cache/mig-extender}/bin/k8s-v1.36.3``; ``k8s-v1.37.2`` for the other
release it builds, see :data:`K8S_VERSIONS` and :func:`ensure_built`). There is no
kubelet and no kube-controller-manager: Nodes are plain API objects (create them
with a ``status``), bound Pods stay ``Pending``. Authentication is a static admin
token in group ``system:masters``.

Library use::

    with ControlPlane(Path("/tmp/cp"), default_bin_dir()) as cp:
        cp.kubeconfig, cp.server, cp.token      # admin access
        handle = cp.start_scheduler(Path("sched.yaml"), "mig")
        cp.stop_scheduler(handle)

CLI::

    python scripts/controlplane.py up --dir /tmp/cp   # until Ctrl-C / SIGTERM

Only the standard library and the ``openssl`` command are needed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

K8S_VERSION = "v1.36.3"
K8S_VERSIONS = ("v1.36.3", "v1.37.2")
"""The releases ``scripts/build-control-plane.sh`` builds; :data:`K8S_VERSION` is the default."""
ADMIN_USER = "mig-extender-admin"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
STOP_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 120.0
BUILD_SCRIPT = "scripts/build-control-plane.sh"
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """A control-plane component failed to start or become ready."""


def default_bin_dir(version: str = K8S_VERSION) -> Path:
    """Where ``scripts/build-control-plane.sh`` puts the binaries of ``version``."""
    cache = os.environ.get("MIG_EXTENDER_CACHE")
    base = Path(cache) if cache else Path.home() / ".cache" / "mig-extender"
    return base / "bin" / f"k8s-{version}"


BINARIES = ("kube-apiserver", "kube-scheduler", "kube-controller-manager", "etcd")


def ensure_built(version: str = K8S_VERSION, *, timeout: float = 3600.0) -> Path:
    """:func:`default_bin_dir` of ``version``, after running the build script if a binary is missing there."""
    if version not in K8S_VERSIONS:
        raise ControlPlaneError(f"Kubernetes {version!r} is not built here (supported: {', '.join(K8S_VERSIONS)})")
    bin_dir = default_bin_dir(version)
    if not all((bin_dir / name).is_file() for name in BINARIES):
        script = Path(__file__).resolve().parent / "build-control-plane.sh"
        subprocess.run(["bash", str(script), version], check=True, timeout=timeout)
    return bin_dir


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child when its parent thread dies (Linux only)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class ManagedProcess:
    """A child process started in its own session (process group == pid)."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the group, wait ``timeout`` s, then SIGKILL; return exit code."""
        try:
            if self.popen.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self.popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.popen.wait(timeout=timeout)
            # No killpg after the leader is reaped: its pgid could be reused.
            return self.popen.returncode
        finally:
            self.log_file.close()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


@dataclass
class SchedulerHandle:
    """A running kube-scheduler started by :meth:`ControlPlane.start_scheduler`."""

    name: str
    config_path: Path
    port: int
    process: ManagedProcess = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def alive(self) -> bool:
        return self.process.alive()


@dataclass
class ApiServerHandle:
    """A further kube-apiserver on the same etcd, started by :meth:`ControlPlane.start_apiserver_replica`."""

    name: str
    port: int
    cert_dir: Path
    process: ManagedProcess = field(repr=False)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "apiserver.crt"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.alive()


class ControlPlane:
    """etcd + kube-apiserver on 127.0.0.1 (random ports), kube-schedulers on demand.

    ``workdir`` receives logs, the apiserver's self-signed serving cert
    (``--cert-dir``), the service-account key, the token file, a fresh etcd data dir
    per :meth:`start` (removed by :meth:`stop`) and ``admin.kubeconfig``. Use as a
    context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        workdir: Path,
        bin_dir: Path | None = None,
        *,
        ready_timeout: float = READY_TIMEOUT_S,
        die_with_parent: bool = True,
        verbosity: int = 2,
        apiserver_extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.bin_dir = Path(bin_dir).resolve() if bin_dir is not None else default_bin_dir()
        self.ready_timeout = ready_timeout
        # PR_SET_PDEATHSIG fires when the *thread* that started a child exits: keep
        # it only if start()/start_scheduler() run on a long-lived (e.g. main) thread.
        self.die_with_parent = die_with_parent
        self.verbosity = verbosity
        self.apiserver_extra_args = list(apiserver_extra_args)
        self._token = ""
        self._apiserver_port = 0
        self._etcd_port = 0
        self._etcd_data_dir: Path | None = None
        self._ca_file: Path | None = None
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._apiserver_args: list[str] = []
        self._schedulers: list[SchedulerHandle] = []
        self._managers: list[SchedulerHandle] = []
        self._replicas: list[ApiServerHandle] = []

    # ------------------------------------------------------------------ properties
    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        if not self._apiserver_port:
            raise ControlPlaneError("control plane not started")
        return f"https://127.0.0.1:{self._apiserver_port}"

    @property
    def token(self) -> str:
        if not self._token:
            raise ControlPlaneError("control plane not started")
        return self._token

    @property
    def ca_file(self) -> Path | None:
        """The apiserver's self-signed cert used as CA; None = TLS not verified."""
        return self._ca_file

    @property
    def etcd_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._etcd_port}"

    def pids(self) -> dict[str, int]:
        """Pids (== process-group ids) of the processes currently managed."""
        out: dict[str, int] = {}
        if self._etcd is not None:
            out["etcd"] = self._etcd.pid
        if self._apiserver is not None:
            out["kube-apiserver"] = self._apiserver.pid
        for handle in self._schedulers:
            out[f"kube-scheduler[{handle.name}]"] = handle.pid
        for handle in self._managers:
            out[f"kube-controller-manager[{handle.name}]"] = handle.pid
        for replica in self._replicas:
            out[f"kube-apiserver[{replica.name}]"] = replica.pid
        return out

    def exited(self) -> dict[str, tuple[int | None, Path]]:
        """Managed processes that died on their own: name -> (exit code, log)."""
        procs = [
            self._etcd,
            self._apiserver,
            *(h.process for h in self._schedulers),
            *(r.process for r in self._replicas),
        ]
        return {p.name: (p.popen.returncode, p.log_path) for p in procs if p is not None and not p.alive()}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd and kube-apiserver, wait for /readyz, write admin.kubeconfig."""
        if self._apiserver is not None or self._etcd is not None:
            raise ControlPlaneError("control plane already started")
        for binary in ("etcd", "kube-apiserver"):
            if not (self.bin_dir / binary).is_file():
                msg = f"{self.bin_dir / binary} not found; run {BUILD_SCRIPT}"
                raise ControlPlaneError(msg)
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_etcd()
            self._prepare_apiserver()
            self._start_apiserver()
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop schedulers, apiserver, etcd (SIGTERM, SIGKILL after a timeout).

        Idempotent; keeps going if one process misbehaves and re-raises the first error.
        """
        procs = [
            *(h.process for h in self._schedulers),
            *(h.process for h in self._managers),
            *(r.process for r in self._replicas),
            self._apiserver,
            self._etcd,
        ]
        self._schedulers.clear()
        self._managers.clear()
        self._replicas.clear()
        self._apiserver = None
        self._etcd = None
        errors: list[OSError | subprocess.SubprocessError] = []
        for proc in procs:
            if proc is None:
                continue
            try:
                proc.stop()
            except (OSError, subprocess.SubprocessError) as err:
                errors.append(err)
        if self._etcd_data_dir is not None:
            shutil.rmtree(self._etcd_data_dir, ignore_errors=True)
            self._etcd_data_dir = None
        if errors:
            raise errors[0]

    def restart_apiserver(self) -> None:
        """Restart kube-apiserver only (same port and etcd data); wait until ready."""
        if self._apiserver is None:
            raise ControlPlaneError("apiserver not running")
        self._apiserver.stop()
        self._apiserver = None
        self._start_apiserver()

    def restart_etcd(self, downtime_s: float = 0.0) -> None:
        """Stop etcd (SIGTERM), stay down ``downtime_s``, start it again on the same ports and data dir.

        Returns once etcd answers ``/health``; the apiservers reconnect by themselves.
        """
        if self._etcd is None:
            raise ControlPlaneError("etcd not running")
        args, log_path = self._etcd.args, self._etcd.log_path
        self._etcd.stop()
        self._etcd = None
        time.sleep(downtime_s)
        self._etcd = self._spawn("etcd", args, log_path)
        self._wait_ready(self._etcd, f"{self.etcd_endpoint}/health", ssl_verify=False)

    def etcd_revision(self) -> int:
        """etcd's current revision (what the apiserver hands out as resourceVersion)."""
        answer = self._etcd_call("/v3/kv/range", {"key": "Lw=="})  # base64 of "/"
        return int(answer["header"]["revision"])

    def compact_etcd(self, revision: int | None = None) -> int:
        """Compact etcd's history up to ``revision`` (default: the current one) and return it.

        A watch resumed from an older resourceVersion then fails with 410 Gone unless an apiserver's
        watch cache still holds the events (start an apiserver with ``--watch-cache=false`` to be sure).
        """
        target = self.etcd_revision() if revision is None else revision
        self._etcd_call("/v3/kv/compaction", {"revision": str(target), "physical": True})
        return target

    def _etcd_call(self, path: str, body: dict[str, Any]) -> Any:
        req = _request(self.etcd_endpoint + path, data=json.dumps(body).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
        with _urlopen(req, None, timeout=10) as resp:
            return json.loads(resp.read())

    def start_apiserver_replica(self, name: str, extra_args: Sequence[str] = ()) -> ApiServerHandle:
        """Another kube-apiserver on the same etcd, with ``extra_args`` (e.g. ``--watch-cache=false``).

        It has its own port and self-signed certificate (in ``<workdir>/<name>``), the same token and
        service-account keys; stopped by :meth:`stop_apiserver_replica` or :meth:`stop`.
        """
        if self._apiserver is None:
            raise ControlPlaneError("control plane not started")
        port = free_port()
        cert_dir = self.workdir / name
        cert_dir.mkdir(exist_ok=True)
        args = [
            f"--secure-port={port}"
            if arg.startswith("--secure-port=")
            else f"--cert-dir={cert_dir}"
            if arg.startswith("--cert-dir=")
            else arg
            for arg in self._apiserver_args
        ]
        proc = self._spawn(f"kube-apiserver[{name}]", [*args, *extra_args], self.workdir / f"apiserver-{name}.log")
        handle = ApiServerHandle(name=name, port=port, cert_dir=cert_dir, process=proc)
        self._replicas.append(handle)
        try:
            self._wait_ready(proc, f"{handle.server}/readyz", ssl_verify=False, auth=True)
        except BaseException:
            self.stop_apiserver_replica(handle)
            raise
        return handle

    def stop_apiserver_replica(self, handle: ApiServerHandle) -> None:
        handle.process.stop()
        if handle in self._replicas:
            self._replicas.remove(handle)

    def start_scheduler(self, config_path: Path, name: str, *, extra_args: Sequence[str] = ()) -> SchedulerHandle:
        """Start kube-scheduler with ``--config=config_path`` and wait for its /healthz.

        The config's ``clientConnection.kubeconfig`` must point at a kubeconfig
        (e.g. :attr:`kubeconfig`); set ``leaderElection.leaderElect: false``.
        ``name`` is used for the log file ``<workdir>/scheduler-<name>.log``.
        ``extra_args`` are appended to the command line (e.g. ``["--v=5"]``).
        """
        binary = self.bin_dir / "kube-scheduler"
        if not binary.is_file():
            raise ControlPlaneError(f"{binary} not found; run {BUILD_SCRIPT}")
        port = free_port()
        args = [
            str(binary),
            f"--config={Path(config_path).resolve()}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            # Skip reading configmap/extension-apiserver-authentication (authn).
            "--authentication-skip-lookup=true",
            f"--v={self.verbosity}",
            *extra_args,
        ]
        log_path = self.workdir / f"scheduler-{name}.log"
        proc = self._spawn(f"kube-scheduler[{name}]", args, log_path)
        handle = SchedulerHandle(name=name, config_path=Path(config_path), port=port, process=proc)
        self._schedulers.append(handle)
        try:
            url = f"https://127.0.0.1:{port}/healthz"
            self._wait_ready(proc, url, ssl_verify=False)
        except BaseException:
            self.stop_scheduler(handle)
            raise
        return handle

    def stop_scheduler(self, handle: SchedulerHandle) -> None:
        handle.process.stop()
        if handle in self._schedulers:
            self._schedulers.remove(handle)

    def start_controller_manager(
        self, name: str = "kcm", *, controllers: Sequence[str] = ("*",), extra_args: Sequence[str] = ()
    ) -> SchedulerHandle:
        """Start kube-controller-manager as the admin (``--controllers`` as given) and wait for its /healthz.

        There is no kubelet: ReplicaSets create pods, the ResourceClaim controller creates claims from
        templates, and the garbage collector removes orphans, but nothing ever runs. Stopped by :meth:`stop`.
        """
        binary = self.bin_dir / "kube-controller-manager"
        if not binary.is_file():
            raise ControlPlaneError(f"{binary} not found; run {BUILD_SCRIPT}")
        port = free_port()
        args = [
            str(binary),
            f"--kubeconfig={self.kubeconfig}",
            f"--controllers={','.join(controllers)}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--authentication-skip-lookup=true",
            f"--service-account-private-key-file={self.workdir / 'sa.key'}",
            "--use-service-account-credentials=false",
            f"--v={self.verbosity}",
            *extra_args,
        ]
        proc = self._spawn(f"kube-controller-manager[{name}]", args, self.workdir / f"controller-manager-{name}.log")
        handle = SchedulerHandle(name=name, config_path=self.kubeconfig, port=port, process=proc)
        self._managers.append(handle)
        try:
            self._wait_ready(proc, f"https://127.0.0.1:{port}/healthz", ssl_verify=False)
        except BaseException:
            self.stop_controller_manager(handle)
            raise
        return handle

    def stop_controller_manager(self, handle: SchedulerHandle) -> None:
        handle.process.stop()
        if handle in self._managers:
            self._managers.remove(handle)

    # ------------------------------------------------------------------ API helper
    def ssl_context(self) -> ssl.SSLContext:
        """TLS context for the apiserver (verifies with :attr:`ca_file` if set)."""
        if self._ca_file is not None:
            return ssl.create_default_context(cafile=str(self._ca_file))
        return _insecure_context()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """Tiny admin API client -> (status, JSON or text); no raise on 4xx/5xx.

        ``content_type`` matters for PATCH (e.g. ``application/merge-patch+json``).
        """
        data = None if body is None else json.dumps(body).encode()
        req = _request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with _urlopen(req, self.ssl_context(), timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    # ------------------------------------------------------------------ internals
    def _spawn(self, name: str, args: list[str], log_path: Path) -> ManagedProcess:
        log_file = log_path.open("ab")
        header = f"\n==== {time.strftime('%H:%M:%S')} {' '.join(args)}\n"
        log_file.write(header.encode())
        log_file.flush()
        preexec: Callable[[], None] | None = None
        if self.die_with_parent:
            preexec = _die_with_parent
        try:
            popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - only prctl(), no locks taken
                cwd=self.workdir,
            )
        except BaseException:
            log_file.close()
            raise
        return ManagedProcess(name=name, args=args, log_path=log_path, popen=popen, log_file=log_file)

    def _start_etcd(self) -> None:
        self._etcd_port = free_port()
        peer_port = free_port()
        data_dir = tempfile.mkdtemp(prefix="etcd-data-", dir=self.workdir)
        self._etcd_data_dir = Path(data_dir)
        client_url = f"http://127.0.0.1:{self._etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        args = [
            str(self.bin_dir / "etcd"),
            "--name=mig-extender",
            f"--data-dir={self._etcd_data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=mig-extender={peer_url}",
            "--auto-compaction-retention=1",
            "--unsafe-no-fsync",  # throwaway test data: durability not needed
            "--log-level=warn",
        ]
        self._etcd = self._spawn("etcd", args, self.workdir / "etcd.log")
        self._wait_ready(self._etcd, f"{client_url}/health", ssl_verify=False)

    def _prepare_apiserver(self) -> None:
        sa_key = self.workdir / "sa.key"
        sa_pub = self.workdir / "sa.pub"
        if not sa_key.is_file() or not sa_pub.is_file():
            for cmd in (
                ["openssl", "genrsa", "-out", str(sa_key), "2048"],
                ["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub)],
            ):
                subprocess.run(cmd, check=True, capture_output=True)
        self._token = secrets.token_hex(24)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self._token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        tokens.chmod(0o600)
        self._apiserver_port = free_port()
        self._apiserver_args = [
            str(self.bin_dir / "kube-apiserver"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self._apiserver_port}",
            f"--cert-dir={self.workdir}",
            f"--etcd-servers={self.etcd_endpoint}",
            f"--service-account-issuer=https://127.0.0.1:{self._apiserver_port}",
            f"--service-account-signing-key-file={sa_key}",
            f"--service-account-key-file={sa_pub}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=RBAC",
            f"--token-auth-file={tokens}",
            "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
            "--endpoint-reconciler-type=none",
            # Otherwise SIGTERM waits up to --request-timeout (60s) for open watches.
            "--shutdown-send-retry-after=true",
            f"--v={self.verbosity}",
            *self.apiserver_extra_args,
        ]

    def _start_apiserver(self) -> None:
        self._apiserver = self._spawn("kube-apiserver", self._apiserver_args, self.workdir / "kube-apiserver.log")
        url = f"{self.server}/readyz"
        self._wait_ready(self._apiserver, url, ssl_verify=False, auth=True)
        # Prefer verifying TLS with the self-signed cert written to --cert-dir.
        crt = self.workdir / "apiserver.crt"
        self._ca_file = None
        if crt.is_file():
            try:
                req = _request(url)
                req.add_header("Authorization", f"Bearer {self._token}")
                ctx = ssl.create_default_context(cafile=str(crt))
                with _urlopen(req, ctx, timeout=10) as resp:
                    if resp.status == 200:
                        self._ca_file = crt
            except (OSError, ssl.SSLError):
                self._ca_file = None

    def _write_kubeconfig(self) -> None:
        self.write_kubeconfig(self.kubeconfig)

    def write_kubeconfig(self, path: Path, server: str | None = None, ca_file: Path | None = None) -> Path:
        """An admin kubeconfig at ``path`` for ``server`` (default: the apiserver), e.g. through a proxy.

        TLS is verified with ``ca_file`` (default: the apiserver's certificate, if it verified).
        """
        server = server or self.server
        ca_file = ca_file or self._ca_file
        if ca_file is not None:
            tls = f"    certificate-authority: {json.dumps(str(ca_file))}\n"
        else:
            tls = "    insecure-skip-tls-verify: true\n"
        text = (
            "apiVersion: v1\n"
            "kind: Config\n"
            "clusters:\n"
            "- name: mig-extender\n"
            "  cluster:\n"
            f"    server: {json.dumps(server)}\n"
            f"{tls}"
            "users:\n"
            f"- name: {ADMIN_USER}\n"
            "  user:\n"
            f"    token: {json.dumps(self._token)}\n"
            "contexts:\n"
            "- name: mig-extender\n"
            "  context:\n"
            "    cluster: mig-extender\n"
            f"    user: {ADMIN_USER}\n"
            "    namespace: default\n"
            "current-context: mig-extender\n"
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        tmp.replace(path)
        return path

    def _wait_ready(self, proc: ManagedProcess, url: str, *, ssl_verify: bool, auth: bool = False) -> None:
        deadline = time.monotonic() + self.ready_timeout
        context = None if ssl_verify else _insecure_context()
        last = "no answer yet"
        while True:
            if not proc.alive():
                raise ControlPlaneError(
                    f"{proc.name} exited with code {proc.popen.returncode} before "
                    f"becoming ready; log {proc.log_path}:\n{_tail(proc.log_path)}"
                )
            req = _request(url)
            if auth:
                req.add_header("Authorization", f"Bearer {self._token}")
            try:
                with _urlopen(req, context, timeout=5) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
            except (OSError, ssl.SSLError) as err:
                last = repr(err)
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{proc.name} not ready at {url} after {self.ready_timeout:.0f}s "
                    f"({last}); log {proc.log_path}:\n{_tail(proc.log_path)}"
                )
            time.sleep(0.25)


def _request(url: str, data: bytes | None = None, method: str = "GET") -> urllib.request.Request:
    if not url.startswith(("http://", "https://")):
        raise ValueError(url)
    return urllib.request.Request(url, data=data, method=method)


def _urlopen(req: urllib.request.Request, context: ssl.SSLContext | None, timeout: float) -> Any:
    return urllib.request.urlopen(req, context=context, timeout=timeout)


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---------------------------------------------------------------------- CLI
def _cmd_up(args: argparse.Namespace) -> int:
    stop_requested = threading.Event()
    started = False

    def on_signal(_signum: int, _frame: object) -> None:
        if not started:
            # Interrupt start(): it stops whatever it already started, then re-raises.
            raise KeyboardInterrupt
        stop_requested.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    plane = ControlPlane(Path(args.dir), Path(args.bin_dir) if args.bin_dir else default_bin_dir(args.k8s_version))
    exit_code = 0
    with plane:
        started = True
        print(f"kubeconfig: {plane.kubeconfig}")
        print(f"server:     {plane.server}")
        print(f"pids:       {plane.pids()}")
        print(f"export KUBECONFIG={plane.kubeconfig}")
        print("control plane up; Ctrl-C or SIGTERM to stop", flush=True)
        while not stop_requested.wait(1.0):
            dead = plane.exited()
            if dead:
                for name, (code, log) in dead.items():
                    msg = f"{name} exited unexpectedly (code {code}); see {log}"
                    print(msg, file=sys.stderr)
                exit_code = 1
                break
        print("stopping control plane ...", flush=True)
    print("stopped", flush=True)
    return exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local control plane (etcd + kube-apiserver) on loopback.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start etcd + kube-apiserver in the foreground")
    up.add_argument("--dir", required=True, help="work dir (logs, certs, kubeconfig)")
    up.add_argument("--k8s-version", default=K8S_VERSION, choices=K8S_VERSIONS, help="release (default: %(default)s)")
    up.add_argument("--bin-dir", default=None, help=f"binaries (default: {default_bin_dir('VERSION')})")
    args = parser.parse_args(argv)
    if args.command == "up":
        try:
            return _cmd_up(args)
        except ControlPlaneError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted during start-up; stopped", file=sys.stderr)
            return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
