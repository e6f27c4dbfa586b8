"""The process's one ApiClient, and requests through it that answer raw JSON.

Raw bodies (``_preload_content=False``) avoid the client's model objects, whose datetime serialisation
drops the microseconds a MicroTime needs, keep what is sent exactly what the caller wrote, and let a watch
stream be read line by line.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from .errors import ConfigError, error_for

ApiClient = client.ApiClient
"""For annotations elsewhere: only this package imports kubernetes-asyncio."""
ERROR_BODY_BYTES = 500
"""How much of an error answer goes into the exception (a Status object's message fits)."""


async def make_api_client(kubeconfig: str | None) -> ApiClient:
    """One ApiClient for the whole process: in-cluster service account, or a kubeconfig file."""
    configuration = client.Configuration()
    try:
        if kubeconfig:
            await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException as exc:
        raise ConfigError(
            str(exc) if kubeconfig else f"not in a pod ({exc}); pass --kubeconfig or --snapshot"
        ) from None
    except OSError as exc:  # an unreadable kubeconfig, or a folder given as one
        raise ConfigError(f"cannot read kubeconfig {kubeconfig}: {exc.strerror or exc}") from None
    return client.ApiClient(configuration)


def identity() -> str:
    """This replica's name: the pod name (downward API ``POD_NAME``), else the host name."""
    return os.environ.get("POD_NAME") or socket.gethostname()


async def raise_for_status(response: Any, what: str) -> None:
    """Nothing for a 2xx answer (its body is left to read); else the error its status names.

    ``response`` is the raw aiohttp response of a ``_preload_content=False`` call, which kubernetes-asyncio
    types as the model it would have built.
    """
    if 200 <= response.status < 300:
        return
    text = (await response.read())[:ERROR_BODY_BYTES].decode(errors="replace")
    response.release()
    raise error_for(response.status, f"{what}: {text}")


async def discard(response: Any, what: str) -> None:
    """A 2xx answer's body is dropped unread; an error raises (as :func:`raise_for_status`)."""
    await raise_for_status(response, what)
    response.release()


async def read_json(response: Any, what: str) -> Any:
    """The parsed body of a 2xx answer (None if empty); else the error its status names."""
    await raise_for_status(response, what)
    data = await response.read()
    response.release()
    return orjson.loads(data) if data else None


ListCall = Callable[..., Awaitable[Any]]
"""A kubernetes-asyncio list method; with ``_preload_content=False`` it answers the raw aiohttp response."""


class Collection:
    """List and watch requests for one collection, answered as checked raw responses for the caller to read."""

    def __init__(self, what: str, list_call: ListCall, **selectors: Any) -> None:
        self.what = what
        self._call = list_call
        self._selectors = selectors

    async def list_page(self, limit: int, continue_token: str | None, read_timeout_s: float) -> aiohttp.ClientResponse:
        paging: dict[str, Any] = {"limit": limit}
        if continue_token:
            paging["_continue"] = continue_token
        response: aiohttp.ClientResponse = await self._call(
            **self._selectors,
            **paging,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=read_timeout_s),
        )
        await raise_for_status(response, f"list {self.what}")
        return response

    async def watch(
        self, resource_version: str | None, timeout_s: int, read_timeout_s: float
    ) -> aiohttp.ClientResponse:
        """A watch with bookmarks; ``timeout_s`` ends it server-side, ``read_timeout_s`` of silence client-side."""
        response: aiohttp.ClientResponse = await self._call(
            **self._selectors,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=resource_version,
            timeout_seconds=timeout_s,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=read_timeout_s),
        )
        await raise_for_status(response, f"watch {self.what}")
        return response


def node_collection(api: ApiClient) -> Collection:
    return Collection("nodes", client.CoreV1Api(api).list_node)


def pod_collection(api: ApiClient) -> Collection:
    return Collection("pods", client.CoreV1Api(api).list_pod_for_all_namespaces)


def config_map_collection(api: ApiClient, namespace: str, name: str) -> Collection:
    """The one ConfigMap ``namespace/name``, as a collection that a field selector narrows to it."""
    return Collection(
        f"configmap {namespace}/{name}",
        client.CoreV1Api(api).list_namespaced_config_map,
        namespace=namespace,
        field_selector=f"metadata.name={name}",
    )


def resource_slice_collection(api: ApiClient) -> Collection:
    return Collection("resourceslices", client.ResourceV1Api(api).list_resource_slice)


def resource_claim_collection(api: ApiClient) -> Collection:
    return Collection("resourceclaims", client.ResourceV1Api(api).list_resource_claim_for_all_namespaces)


def claim_template_collection(api: ApiClient) -> Collection:
    return Collection(
        "resourceclaimtemplates", client.ResourceV1Api(api).list_resource_claim_template_for_all_namespaces
    )


def device_class_collection(api: ApiClient) -> Collection:
    return Collection("deviceclasses", client.ResourceV1Api(api).list_device_class)
