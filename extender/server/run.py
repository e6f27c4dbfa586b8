"""Running the extender: the view's sources, the annotator and the HTTP server as supervised root tasks.

As in kopf's ``run_tasks``: the root tasks run until a signal asks to stop or one of them ends; a root
task that ends on its own is a bug or a fatal condition, logged loudly, and the process exits non-zero so
that Kubernetes restarts it rather than leaving a frozen view behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from ..controllers.defrag import DefragController
from ..controllers.headroom import HeadroomController
from ..controllers.leader import LeaderElector
from ..controllers.provisioning import ProvisioningController, load_pools
from ..controllers.relayout import RelayoutController
from ..controllers.routing import LeaderRoute
from ..kube.api import KubeApi
from ..kube.client import identity, make_api_client
from ..metrics import Metrics
from ..model.policy import PolicyConfig
from ..notify.annotator import Annotator
from ..notify.writers import KubeWriter, LogWriter
from ..settings import LoggingSettings, ServerSettings, Settings, TlsSettings
from ..supervise import run_supervised
from ..view.snapshot import load_snapshot
from ..view.store import ClusterView
from ..view.watch import reflectors
from .app import Gate, build_app, build_metrics_app
from .guard import ConnectionGuard, GuardCollector, GuardedSite
from .scheduling import SchedulingService
from .tls import CertificateReloader, TlsCollector, TlsError, TlsFiles

log = logging.getLogger(__name__)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: LoggingSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # kubernetes_asyncio logs every API response body at DEBUG: whole Pod specs, env values included. Never
    # let a debug log level turn that on; the extender's own debug lines name objects, not their contents.
    logging.getLogger("kubernetes_asyncio").setLevel(max(root.level, logging.INFO))


async def _wait_for_signal(stop: asyncio.Event) -> None:
    await stop.wait()


def _controller_roots(
    settings: Settings,
    view: ClusterView,
    api: Any,
    service: SchedulingService,
    annotator: Annotator | None,
    metrics: Metrics,
    gate: Gate,
) -> dict[str, Coroutine[Any, Any, None]]:
    """The re-layout controller, the provisioning loop and (leader_only_verbs) the answers to kube-scheduler,
    under one leader election."""
    modes = (
        ("relayout", settings.relayout.mode),
        ("provision", settings.provisioning.mode),
        ("defrag", settings.defrag.mode),
        ("headroom", settings.headroom.mode),
    )
    wanted = [name for name, mode in modes if mode != "off"]
    election = settings.leader_election
    if not wanted and not election.verbs:
        return {}
    if api is None:
        needs = [*wanted, "leader_only_verbs"] if election.verbs else wanted
        log.warning("%s need a live cluster: not started with --snapshot", " and ".join(needs))
        return {}
    kube = KubeApi(api)
    roots: dict[str, Coroutine[Any, Any, None]] = {}
    elector: LeaderElector | None = None
    if election.enabled:
        elector = LeaderElector(
            kube,
            election,
            identity=identity(),
            # A replica whose view is stale must not act, nor answer: it gives the Lease to one that is current.
            may_lead=lambda: view.readiness(settings.view.stale_after_s)[0],
            before_release=lambda: gate.drained(settings.server.shutdown_timeout_s),
        )
        roots["leader election"] = elector.run()
    if election.verbs:
        assert elector is not None  # Settings checks it
        pod_name, namespace = _own_pod(settings)
        route = LeaderRoute(
            view, kube, elector, namespace=namespace, pod_name=pod_name, sweep_s=election.retry_period_s
        )
        roots["leader route"] = run_supervised(
            route.run,
            what="leader route",
            on_error=metrics.background_errors.labels("leader-route").inc,
            after_error=lambda: asyncio.sleep(election.retry_period_s),
        )
        gate.serving = route.serving
        log.info("answering kube-scheduler only while holding the Lease %s/%s", election.namespace, election.name)

    def leading() -> bool:
        return elector is None or elector.is_leader

    if settings.relayout.mode != "off":
        relayout = RelayoutController(view, kube, settings.relayout, weights=service.weights, is_leader=leading)
        roots["relayout"] = relayout.run()
        metrics.register_relayout(relayout.stats)
        if annotator is not None:
            annotator.relayout_notes = relayout.note_for
    if settings.provisioning.mode != "off":
        assert settings.provisioning.pools_file is not None  # Settings checks it
        pools = load_pools(settings.provisioning.pools_file)
        provisioning = ProvisioningController(view, kube, settings.provisioning, pools, is_leader=leading)
        roots["provisioning"] = provisioning.run()
        metrics.register_provisioning(provisioning.stats)
    if settings.defrag.mode != "off":
        # Static GPUs are emptied for a re-layout only when the re-layout controller will re-partition them.
        defrag = DefragController(
            view,
            kube,
            settings.defrag,
            relayout=settings.relayout.mode == "on",
            policy=service.policy,
            is_leader=leading,
        )
        roots["defrag"] = defrag.run()
        metrics.register_defrag(defrag.stats)
    if settings.headroom.mode != "off":
        headroom = HeadroomController(view, kube, settings.headroom, weights=service.weights, is_leader=leading)
        roots["headroom"] = headroom.run()
        metrics.register_headroom(headroom.stats)
    if annotator is not None and elector is not None:
        annotator.active = leading  # one replica writes verdicts, the same that acts on them
    log.info(
        "controllers: relayout %s, provision %s, defrag %s, headroom %s (leader election %s)",
        settings.relayout.mode,
        settings.provisioning.mode,
        settings.defrag.mode,
        settings.headroom.mode,
        "on" if elector else "off",
    )
    return roots


class PodIdentityError(Exception):
    """leader_only_verbs without the Pod's name: it could not label its Pod for the Service."""


def _own_pod(settings: Settings) -> tuple[str, str]:
    """This replica's Pod: POD_NAME and POD_NAMESPACE from the downward API (the namespace defaults to the
    Lease's, the extender's own in every shipped manifest)."""
    name = os.environ.get("POD_NAME")
    if not name:
        raise PodIdentityError(
            "leader_only_verbs needs the Pod's name in POD_NAME (downward API fieldPath metadata.name): "
            "the leader labels its Pod so that the Service selects it alone"
        )
    return name, os.environ.get("POD_NAMESPACE") or settings.leader_election.namespace


async def _source(
    settings: Settings, view: ClusterView, metrics: Metrics, roots: dict[str, Coroutine[Any, Any, None]]
) -> tuple[Any, KubeWriter | LogWriter]:
    """The view's source (a snapshot, or list+watch reflectors added to ``roots``), its API client and writer."""
    if settings.view.snapshot:
        counts = load_snapshot(view, settings.view.snapshot)
        log.info("serving snapshot %s: %s", settings.view.snapshot, counts)
        return None, LogWriter(view)
    api = await make_api_client(settings.view.kubeconfig)
    for reflector in reflectors(
        view,
        api,
        timeout_s=settings.view.watch_timeout_s,
        read_timeout_s=settings.view.watch_read_timeout_s,
        observer=metrics,
    ):
        roots[f"watch {reflector.kind}"] = reflector.run()
    return api, KubeWriter(api)


def _tls(settings: TlsSettings) -> CertificateReloader | None:
    if not (settings.cert_file and settings.key_file):
        return None
    files = TlsFiles(settings.cert_file, settings.key_file, settings.client_ca_file)
    return CertificateReloader(files, interval_s=settings.reload_interval_s)


async def start_listener(
    app: web.Application,
    settings: ServerSettings,
    guard: ConnectionGuard,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, GuardedSite]:
    """Serve ``app`` on ``settings.host``/``port`` through ``guard`` (and TLS with ``ssl_context``)."""
    runner = web.AppRunner(
        app,
        access_log=log if settings.access_log else None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout_s,
        keepalive_timeout=settings.keepalive_timeout_s,
    )
    await runner.setup()
    site = GuardedSite(runner, settings.host, settings.port, guard=guard, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site


class ListenError(Exception):
    """The listener could not bind (the port is taken, say): said by the CLI in one line."""

    def __init__(self, where: str, error: OSError) -> None:
        super().__init__(f"cannot listen on {where}: {error.strerror or error}")
        self.where = where
        self.errno = error.errno


async def _listen(
    app: web.Application, settings: ServerSettings, guard: ConnectionGuard, tls: CertificateReloader | None
) -> tuple[web.AppRunner, GuardedSite]:
    try:
        return await start_listener(app, settings, guard, tls.listening_context if tls else None)
    except OSError as exc:
        raise ListenError(f"{settings.host}:{settings.port}", exc) from exc


async def _listen_metrics(
    settings: Settings, view: ClusterView, metrics: Metrics
) -> tuple[web.AppRunner, GuardedSite] | None:
    """The metrics listener on metrics_host:metrics_port (plain HTTP, its own connection limit), if one is set."""
    server = settings.server
    if not server.metrics_port:
        return None
    listener = dataclasses.replace(server, host=server.metrics_host, port=server.metrics_port, metrics_port=0)
    guard = ConnectionGuard.from_settings(listener)
    return await _listen(build_metrics_app(settings, view, metrics, guard=guard), listener, guard, None)


async def _assemble(
    settings: Settings,
    view: ClusterView,
    metrics: Metrics,
    api: Any,
    writer: KubeWriter | LogWriter,
    tls: CertificateReloader | None,
    roots: dict[str, Coroutine[Any, Any, None]],
) -> list[tuple[web.AppRunner, GuardedSite]]:
    """The annotator, the controllers and the HTTP app over the view, with their root tasks added to ``roots``;
    the listener bound, and the metrics listener if metrics_port is set."""
    annotator = None
    if settings.annotator.enabled:
        policy = PolicyConfig(dynamic_allocator=settings.scoring.dynamic_allocator)
        notes = settings.annotator
        annotator = Annotator(
            view, writer, metrics, policy=policy, rate=notes.rate, scan_interval_s=notes.scan_interval_s
        )
        roots["annotator"] = annotator.run()
    service = SchedulingService(view, settings, metrics, on_unschedulable=annotator.poke if annotator else None)
    gate = Gate(who=identity())
    roots.update(_controller_roots(settings, view, api, service, annotator, metrics, gate))
    metrics.weights_provider = service.weights
    guard = ConnectionGuard.from_settings(settings.server)
    metrics.registry.register(GuardCollector(guard))
    if tls is not None:
        roots["tls reload"] = tls.run()
        metrics.registry.register(TlsCollector(tls.stats))
    binder = KubeApi(api) if api is not None else None  # the bind verb's Bindings; none with a snapshot
    app = build_app(settings, view, metrics, service, guard=guard, binder=binder, gate=gate)
    listeners = [await _listen(app, settings.server, guard, tls)]
    try:
        extra = await _listen_metrics(settings, view, metrics)
    except BaseException:
        await listeners[0][0].cleanup()
        raise
    return listeners + ([extra] if extra else [])


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until a root task dies (exit 1); 2 for unusable TLS files."""
    try:
        tls = _tls(settings.tls)  # first: a bad certificate must stop the start-up before anything else runs
        if settings.leader_election.verbs and not settings.view.snapshot:
            _own_pod(settings)
    except (TlsError, PodIdentityError) as exc:
        log.error("cannot serve: %s", exc)
        print(f"mig-extender: {exc}", file=sys.stderr)
        return 2
    view = ClusterView(config_ref=settings.mig_parted, assume_ttl_s=settings.view.assume_ttl_s)
    metrics = Metrics(view, per_gpu=settings.metrics.per_gpu)
    roots: dict[str, Coroutine[Any, Any, None]] = {}
    api, writer = await _source(settings, view, metrics, roots)
    try:
        listeners = await _assemble(settings, view, metrics, api, writer, tls, roots)
    except BaseException:  # the root tasks never ran: close them quietly, and the API client with them
        for coro in roots.values():
            coro.close()
        if api is not None:
            await api.close()
        raise
    for _, site in listeners:
        log.info("mig-extender listening on %s", site.name)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = {asyncio.create_task(coro, name=name): name for name, coro in roots.items()}
    stopper = asyncio.create_task(_wait_for_signal(stop), name="signal")
    exit_code = 0
    try:
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is stopper:
                log.info("stopping on signal")
                continue
            exit_code = 1
            error = task.exception() if not task.cancelled() else None
            log.critical("root task %r ended unexpectedly: %r; exiting", tasks[task], error)
    finally:
        for task in [stopper, *tasks]:
            task.cancel()
        for task in [stopper, *tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for runner, _ in listeners:
            await asyncio.shield(runner.cleanup())
        if api is not None:
            await api.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return exit_code
