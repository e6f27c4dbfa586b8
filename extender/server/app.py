"""The aiohttp application: kube-scheduler's verbs, probes and metrics over the cluster view."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..metrics import Metrics
from ..settings import Settings
from ..view.store import ClusterView
from .scheduling import SchedulingService
from .wire import BadRequest, ExtenderArgs, parse_extender_args

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
VIEW = web.AppKey("view", ClusterView)
METRICS = web.AppKey("metrics", Metrics)
SERVICE = web.AppKey("service", SchedulingService)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message}, status)


async def _read_args(request: web.Request, verb: str) -> ExtenderArgs | web.Response:
    metrics = request.app[METRICS]
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        metrics.bad_requests.labels(verb, "413").inc()
        return _error(f"request body is larger than {limit} bytes (setting max_body_bytes)", 413)
    try:
        return parse_extender_args(body)
    except BadRequest as exc:
        metrics.bad_requests.labels(verb, str(exc.status)).inc()
        return _error(str(exc), exc.status)


def _verb(
    name: str, answer: Callable[[SchedulingService, ExtenderArgs], Any], on_fault: Callable[[ExtenderArgs], Any]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        started = time.perf_counter()
        metrics = request.app[METRICS]
        args = await _read_args(request, name)
        if isinstance(args, web.Response):
            return args
        try:
            result = answer(request.app[SERVICE], args)
        except BadRequest as exc:
            metrics.bad_requests.labels(name, str(exc.status)).inc()
            return _error(str(exc), exc.status)
        except Exception:
            # A bug must not take the pod down with a 500; the answer says what happened instead.
            log.exception("%s failed", name)
            metrics.bad_requests.labels(name, "internal").inc()
            result = on_fault(args)
        response = _json(result)
        metrics.request_seconds.labels(name).observe(time.perf_counter() - started)
        return response

    return handler


def _filter_fault(args: ExtenderArgs) -> dict[str, Any]:
    # Error makes kube-scheduler fail this attempt (SchedulerError) and retry: safer than a wrong pass.
    return {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": "mig-extender internal error; see its logs",
    }


def _prioritize_fault(args: ExtenderArgs) -> list[dict[str, Any]]:
    return [{"Host": name, "Score": 0} for name in args.candidate_names()]


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready, reason = request.app[VIEW].readiness(request.app[SETTINGS].stale_after_s)
    return _json({"status": "ok" if ready else "not ready", "reason": reason}, 200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(settings: Settings, view: ClusterView, metrics: Metrics, service: SchedulingService) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[VIEW] = view
    app[METRICS] = metrics
    app[SERVICE] = service
    app.router.add_post("/filter", _verb("filter", lambda s, a: s.filter(a), _filter_fault))
    app.router.add_post("/prioritize", _verb("prioritize", lambda s, a: s.prioritize(a), _prioritize_fault))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app
