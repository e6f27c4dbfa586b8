"""The aiohttp application: kube-scheduler's verbs, probes and metrics over the cluster view.

Every request passes :func:`_guard_requests`: its body is read within the connection's deadline and size limit
(guard.py says why and how), and a client certificate is required where configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..kube.api import BindingApi
from ..kube.errors import ApiError
from ..metrics import VERBS, Metrics
from ..settings import Settings, TlsSettings
from ..view.store import ClusterView
from .guard import ConnectionGuard, GuardStats
from .ratelog import RateLimitedLog
from .scheduling import BindRefused, SchedulingService
from .wire import BadRequest, ExtenderArgs, binding_result, parse_binding_args, parse_extender_args

log = logging.getLogger(__name__)


class Gate:
    """Whether this replica answers kube-scheduler's calls now, and the bindings it has in flight.

    With ``leader_only_verbs`` only the replica that holds the Lease (and whose Pod the Service selects)
    answers; the others refuse, so that two replicas never answer from views that lack each other's
    assumptions. Before it gives the Lease up, a replica waits for its bindings in flight (:meth:`drained`), so
    that its successor's watch has them.
    """

    def __init__(self, serving: Callable[[], bool] | None = None, *, who: str = "this replica") -> None:
        self.serving: Callable[[], bool] = serving or (lambda: True)
        self.refusal = (
            f"mig-extender {who} does not hold the Lease (leader_only_verbs): it answers no calls. The Service "
            "selects only the replica that does; kube-scheduler retries the pod"
        )
        self.binds_in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def binding(self) -> Iterator[None]:
        self.binds_in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.binds_in_flight -= 1
            if not self.binds_in_flight:
                self._idle.set()

    async def drained(self, timeout_s: float) -> None:
        """Return once no binding is in flight, or after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()


SETTINGS = web.AppKey("settings", Settings)
VIEW = web.AppKey("view", ClusterView)
METRICS = web.AppKey("metrics", Metrics)
SERVICE = web.AppKey("service", SchedulingService)
GATE = web.AppKey("gate", Gate)
BINDER = web.AppKey("binder", BindingApi)

GUARD = web.AppKey("guard", ConnectionGuard)
GUARD_STATS = web.AppKey("guard_stats", GuardStats)
OPEN_PATHS = web.AppKey("open_paths", frozenset[str])
REFUSALS = web.AppKey("refusals", RateLimitedLog)

REFUSAL_LOG_INTERVAL_S = 60.0
"""A refused request is logged once per reason in this interval; the repeats are counted in the next line."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message}, status)


def _log_refusal(request: web.Request, status: int, message: str) -> None:
    """Logged, as kube-scheduler reports only "extender error"; once per reason a minute (REFUSAL_LOG_INTERVAL_S)."""
    reason = message.split(":", 1)[0]  # the message without the request's own details (a JSON error's position)
    # Keyed by verb, not path: 403, 408 and 413 answer any path, and a client varying it must not get a line each.
    verb = request.path.strip("/")
    request.app[REFUSALS].note(
        f"{verb if verb in VERBS else 'other'} {status} {reason}",
        f"{request.method} {request.path} from {request.remote}: {status} {message}",
    )


def _refused(request: web.Request, status: int, message: str) -> web.Response:
    """An error answer to a request: counted for a verb, logged, and the message as JSON."""
    verb = request.path.strip("/")
    if verb in VERBS:
        request.app[METRICS].bad_requests.labels(verb, str(status)).inc()
    _log_refusal(request, status, message)
    return _error(message, status)


async def _read_args(request: web.Request) -> ExtenderArgs | web.Response:
    body = await request.read()  # already read, within its deadline and size limit, by _guard_requests
    try:
        return parse_extender_args(body)
    except BadRequest as exc:
        return _refused(request, exc.status, str(exc))


def _verb(
    name: str,
    answer: Callable[[SchedulingService, ExtenderArgs], Any],
    on_fault: Callable[[ExtenderArgs], Any],
    on_standby: Callable[[ExtenderArgs, str], Any],
    *,
    settle: bool = False,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler for ``name``; ``settle``: first wait for the binds of pods answered just before
    (``SchedulingService.settle_binds``)."""

    async def handler(request: web.Request) -> web.Response:
        started = time.perf_counter()
        metrics = request.app[METRICS]
        args = await _read_args(request)
        if isinstance(args, web.Response):
            return args
        gate = request.app[GATE]
        if not gate.serving():
            return _standby(request, name, on_standby(args, gate.refusal))
        if settle:
            waited = await request.app[SERVICE].settle_binds(args.pod)
            if waited is not None:
                metrics.bind_waits.labels(waited).inc()
            if not gate.serving():  # it may have lost the Lease meanwhile
                return _standby(request, name, on_standby(args, gate.refusal))
        try:
            result = answer(request.app[SERVICE], args)
        except BadRequest as exc:
            return _refused(request, exc.status, str(exc))
        except Exception:
            # A bug must not take the pod down with a 500; the answer says what happened instead.
            log.exception("%s failed", name)
            metrics.bad_requests.labels(name, "internal").inc()
            result = on_fault(args)
        response = _json(result)
        metrics.request_seconds.labels(name).observe(time.perf_counter() - started)
        return response

    return handler


def _standby(request: web.Request, verb: str, answer: Any) -> web.Response:
    """A call this replica does not answer (it does not hold the Lease): counted, logged once a minute.

    The connection is closed after the answer: kube-scheduler's next call opens a new one, which the Service
    sends to the replica it selects now (an open connection stays with the replica it reached)."""
    request.app[METRICS].standby_refusals.labels(verb).inc()
    request.app[REFUSALS].note(f"{verb} standby", f"{verb} refused: {request.app[GATE].refusal}")
    response = _json(answer)
    response.force_close()
    return response


def _filter_error(message: str) -> dict[str, Any]:
    # Error makes kube-scheduler fail this attempt (SchedulerError) and retry: safer than a wrong pass.
    return {"Nodes": None, "NodeNames": None, "FailedNodes": {}, "FailedAndUnresolvableNodes": {}, "Error": message}


def _filter_fault(args: ExtenderArgs) -> dict[str, Any]:
    return _filter_error("mig-extender internal error; see its logs")


def _prioritize_fault(args: ExtenderArgs) -> list[dict[str, Any]]:
    return [{"Host": name, "Score": 0} for name in args.candidate_names()]


def _definitive(error: Exception) -> bool:
    """The API server refused the binding for good (the pod is gone, was re-created, is bound already, or the
    request is forbidden), rather than a timeout or an overloaded server after which it may have been done."""
    return isinstance(error, ApiError) and 400 <= error.status < 500 and error.status != 429


async def bind(request: web.Request) -> web.Response:
    """kube-scheduler's bind verb: count the pod on the node it chose, then create the Binding.

    The view assumes the pod on that node before the Binding is created, so that answers given meanwhile count
    it where it goes (prioritize assumed it on its best-scored node, which kube-scheduler may have outvoted).
    A MIG pod whose slices on that node are taken meanwhile is not bound (``BindRefused``), and a binding the
    API server refuses drops the count again: kube-scheduler schedules the pod anew.
    """
    started = time.perf_counter()
    metrics = request.app[METRICS]
    try:
        args = parse_binding_args(await request.read())
    except BadRequest as exc:
        return _refused(request, exc.status, str(exc))
    gate = request.app[GATE]
    if not gate.serving():
        return _standby(request, "bind", binding_result(gate.refusal))
    binder = request.app.get(BINDER)
    if binder is None:
        return _json(binding_result("mig-extender serves a snapshot: it has no API server to bind pods with"))
    service = request.app[SERVICE]
    try:
        service.bind(args)
    except BindRefused as exc:
        metrics.binds.labels("refused").inc()
        request.app[REFUSALS].note("bind refused", f"bind of {args.namespace}/{args.name} refused: {exc}")
        metrics.request_seconds.labels("bind").observe(time.perf_counter() - started)
        return _json(binding_result(f"{exc}; kube-scheduler schedules the pod again"))
    except Exception:  # the count is wrong until the watch shows the binding; the binding itself can go on
        log.exception("bind: assuming %s/%s on %s failed", args.namespace, args.name, args.node)
        metrics.bad_requests.labels("bind", "internal").inc()
    error = ""
    with gate.binding():
        try:
            await binder.bind_pod(args.namespace, args.name, args.uid, args.node)
        except Exception as exc:
            if _definitive(exc):
                service.bind_failed(args)  # not on the node: its slices are free again
            # else it may be bound: the assumption stays until the watch shows the pod (or assume_ttl_s)
            metrics.binds.labels("failed").inc()
            error = f"binding pod {args.namespace}/{args.name} to node {args.node}: {exc}"
            request.app[REFUSALS].note(f"bind failed {type(exc).__name__}", error)
    metrics.request_seconds.labels("bind").observe(time.perf_counter() - started)
    return _json(binding_result(error))


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready, reason = request.app[VIEW].readiness(request.app[SETTINGS].view.stale_after_s)
    return _json({"status": "ok" if ready else "not ready", "reason": reason}, 200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    # In steps, yielding to the loop between them: filters that arrive during a scrape wait milliseconds.
    steps = request.app[METRICS].exposition_steps()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            body: bytes = done.value
            break
        await asyncio.sleep(0)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def open_paths(settings: TlsSettings) -> frozenset[str]:
    """Paths served without a client certificate when ``tls_client_ca_file`` is set."""
    return frozenset(path.strip() for path in settings.open_paths.split(",") if path.strip())


def _too_large(request: web.Request, limit: int) -> web.Response:
    response = _refused(request, 413, f"request body is larger than {limit} bytes (setting max_body_bytes)")
    response.force_close()
    return response


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """An unknown path or method answered in JSON like every other error (aiohttp's own answer is plain text)."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        served = ", ".join(
            f"{route.method} {route.resource.canonical}"
            for route in request.app.router.routes()
            if route.method != "HEAD" and route.resource is not None
        )
        return _error(f"no such path {request.path}; served: {served}", 404)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        response = _error(f"{request.method} is not allowed on {request.path}; use {allowed}", 405)
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return response


async def _cut_off(request: web.Request, status: int, message: str) -> web.Response:
    """Answer and close at once: aiohttp would otherwise linger reading the rest of an unread body."""
    _log_refusal(request, status, message)
    response = _error(message, status)
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    if request.transport is not None:
        request.transport.close()
    return response


@web.middleware
async def _guard_requests(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    stats = request.app[GUARD_STATS]
    guard = request.app.get(GUARD)
    connection = guard.connection(request.transport) if guard is not None else None
    time_left = connection.headers_received() if connection is not None else settings.server.read_timeout_s
    try:
        if settings.tls.client_ca_file and request.path not in request.app[OPEN_PATHS]:
            transport = request.transport
            if not (transport is not None and transport.get_extra_info("peercert")):
                stats.client_certificate_refusals += 1
                message = (
                    "a client certificate is required: configure tlsConfig certFile/keyFile in kube-scheduler's "
                    "extender entry, signed by the CA in the extender's tls_client_ca_file"
                )
                _log_refusal(request, 403, message)
                return _error(message, 403)
        if request.body_exists:
            limit = settings.server.max_body_bytes
            if request.content_length is not None and request.content_length > limit:
                return _too_large(request, limit)
            try:
                async with asyncio.timeout(max(time_left, 0.0)):
                    await request.read()  # cached on the request: handlers read it again for free
            except TimeoutError:
                stats.body_timeouts += 1
                waited = settings.server.read_timeout_s
                return await _cut_off(request, 408, f"request body not received within {waited:g} s (read_timeout_s)")
            except web.HTTPRequestEntityTooLarge:  # a chunked body that grew past the limit
                return _too_large(request, limit)
        return await handler(request)
    finally:
        if connection is not None:
            connection.request_done()


def build_app(
    settings: Settings,
    view: ClusterView,
    metrics: Metrics,
    service: SchedulingService,
    *,
    guard: ConnectionGuard | None = None,
    binder: BindingApi | None = None,
    gate: Gate | None = None,
) -> web.Application:
    """The application; ``guard`` is the listener's (:class:`GuardedSite`), absent under aiohttp's test server.
    ``binder`` creates the Bindings of the bind verb (none with a snapshot); ``gate`` says when to answer."""
    app = web.Application(client_max_size=settings.server.max_body_bytes, middlewares=[_json_errors, _guard_requests])
    app[SETTINGS] = settings
    app[VIEW] = view
    app[METRICS] = metrics
    app[SERVICE] = service
    app[GATE] = gate or Gate()
    if binder is not None:
        app[BINDER] = binder
    app[OPEN_PATHS] = open_paths(settings.tls)
    app[REFUSALS] = RateLimitedLog(log, REFUSAL_LOG_INTERVAL_S)
    app[GUARD_STATS] = guard.stats if guard is not None else GuardStats()
    if guard is not None:
        app[GUARD] = guard
    app.router.add_post(
        "/filter",
        _verb(
            "filter",
            lambda s, a: s.filter_encoded(a),
            _filter_fault,
            lambda a, why: _filter_error(why),
            settle=True,
        ),
    )
    app.router.add_post(
        "/prioritize",
        _verb("prioritize", lambda s, a: s.prioritize(a), _prioritize_fault, lambda a, why: _prioritize_fault(a)),
    )
    app.router.add_post("/bind", bind)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


METRICS_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
"""What the metrics listener (setting metrics_port) serves: no verbs, no client certificates."""


def build_metrics_app(
    settings: Settings, view: ClusterView, metrics: Metrics, *, guard: ConnectionGuard | None = None
) -> web.Application:
    """The metrics listener's application: ``/metrics`` and the probes over the same view and registry."""
    app = web.Application(client_max_size=settings.server.max_body_bytes, middlewares=[_json_errors, _guard_requests])
    app[SETTINGS] = settings
    app[VIEW] = view
    app[METRICS] = metrics
    app[OPEN_PATHS] = METRICS_PATHS  # plain HTTP: no peer could present a certificate
    app[REFUSALS] = RateLimitedLog(log, REFUSAL_LOG_INTERVAL_S)
    app[GUARD_STATS] = guard.stats if guard is not None else GuardStats()
    if guard is not None:
        app[GUARD] = guard
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app
