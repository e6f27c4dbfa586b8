"""kube-scheduler extender v1 wire types (``k8s.io/kube-scheduler/extender/v1``).

The Go structs carry no json tags, so keys are the Go field names (``Pod``, ``NodeNames``, ``FailedNodes``...)
and nil fields are sent as ``null`` (kubernetes/kube-scheduler ``extender/v1/types.go``; ``types_test.go`` pins
the encodings). Go decodes keys case-insensitively; so does this parser, after trying the exact spelling
first. Answers always use the exact spelling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any

import orjson

MAX_IDENTITY_LENGTH = 253  # a DNS subdomain, the longest name the API server accepts


class BadRequest(Exception):
    """A request that is not a valid ExtenderArgs; answered with HTTP 400 and this message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    pod: Mapping[str, Any]
    node_names: list[str] | None
    """Set when kube-scheduler runs the extender with ``nodeCacheCapable: true``."""
    nodes: list[Mapping[str, Any]] | None
    """Full Node objects, when ``nodeCacheCapable: false``."""

    @property
    def node_cache_capable(self) -> bool:
        return self.nodes is None

    def candidate_names(self) -> list[str]:
        if self.node_names is not None:
            return self.node_names
        assert self.nodes is not None
        return [node_name(n) for n in self.nodes]


def node_name(node: Mapping[str, Any]) -> str:
    metadata = node.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("ExtenderArgs.Nodes.items: a node has no metadata.name")
    return name


def _get(data: Mapping[str, Any], key: str) -> Any:
    if key in data:
        return data[key]
    lowered = key.lower()
    for candidate, value in data.items():
        if isinstance(candidate, str) and candidate.lower() == lowered:
            return value
    return None


def parse_extender_args(body: bytes) -> ExtenderArgs:
    if not body:
        raise BadRequest("empty request body: expected ExtenderArgs JSON")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be an ExtenderArgs object, not a JSON {type(data).__name__}")
    pod = _get(data, "Pod")
    if not isinstance(pod, dict):
        raise BadRequest("ExtenderArgs.Pod is missing or not an object")
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise BadRequest("ExtenderArgs.Pod.metadata.name is missing")
    for key in ("name", "namespace", "uid"):
        # Strings in Go's v1.ObjectMeta; anything else would be str()-ed into the pod's identity.
        value = metadata.get(key)
        if not isinstance(value, str | None):
            raise BadRequest(f"ExtenderArgs.Pod.metadata.{key} must be a string or null")
        if value is not None and len(value) > MAX_IDENTITY_LENGTH:
            # The API server allows 253 (names); a longer one is kept in the view's caches per request.
            raise BadRequest(f"ExtenderArgs.Pod.metadata.{key} is longer than {MAX_IDENTITY_LENGTH} characters")
    names = _get(data, "NodeNames")
    # map(type, ...) runs in C: 5,000 names are checked in microseconds.
    if names is not None and (not isinstance(names, list) or not set(map(type, names)) <= {str}):
        raise BadRequest("ExtenderArgs.NodeNames must be a list of strings or null")
    raw_nodes = _get(data, "Nodes")
    nodes: list[Mapping[str, Any]] | None = None
    if raw_nodes is not None:
        if not isinstance(raw_nodes, dict):
            raise BadRequest("ExtenderArgs.Nodes must be a NodeList object or null")
        items = raw_nodes.get("items")
        if items is None:
            items = []
        if not isinstance(items, list) or not set(map(type, items)) <= {dict}:
            raise BadRequest("ExtenderArgs.Nodes.items must be a list of Node objects")
        nodes = items
    if names is None and nodes is None:
        raise BadRequest("ExtenderArgs has neither NodeNames nor Nodes")
    if names is not None and nodes is not None:
        names = None  # kube-scheduler never sends both; the full objects are the richer answer
    return ExtenderArgs(pod=pod, node_names=names, nodes=nodes)


@dataclass(frozen=True, slots=True)
class BindingArgs:
    """ExtenderBindingArgs: the pod kube-scheduler chose a node for, and that node."""

    name: str
    namespace: str
    uid: str
    node: str


def parse_binding_args(body: bytes) -> BindingArgs:
    """``{"PodName", "PodNamespace", "PodUID", "Node"}`` (kube-scheduler's ``HTTPExtender.Bind``): strings no longer
    than a name the API server accepts, all but ``PodUID`` non-empty (an empty uid binds without the precondition)."""
    if not body:
        raise BadRequest("empty request body: expected ExtenderBindingArgs JSON")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be an ExtenderBindingArgs object, not a JSON {type(data).__name__}")
    values = []
    for key in ("PodName", "PodNamespace", "PodUID", "Node"):
        value = _get(data, key)
        if key == "PodUID" and value is None:
            value = ""
        if not isinstance(value, str) or (not value and key != "PodUID"):
            raise BadRequest(f"ExtenderBindingArgs.{key} must be a non-empty string")
        if len(value) > MAX_IDENTITY_LENGTH:
            raise BadRequest(f"ExtenderBindingArgs.{key} is longer than {MAX_IDENTITY_LENGTH} characters")
        values.append(value)
    return BindingArgs(*values)


def binding_result(error: str = "") -> dict[str, str]:
    """ExtenderBindingResult: an empty ``Error`` is a binding done; any text fails kube-scheduler's binding cycle."""
    return {"Error": error}


def filter_result(
    args: ExtenderArgs,
    passes: Iterable[bool],
    failed: Mapping[str, str],
    unresolvable: Mapping[str, str],
) -> dict[str, Any]:
    """ExtenderFilterResult, with the feasible list in the field that matches the request's mode.

    ``passes`` marks the candidates that passed, in request order. A null in the feasible field would make
    kube-scheduler treat every node as filtered out (gotcha 2).
    """
    if args.nodes is not None:
        try:
            # Encoded here, once: orjson reads 1,024 levels of nesting but writes only 255, and a node it
            # cannot write back must be a bad request, not a failed answer.
            items = [orjson.Fragment(orjson.dumps(node)) for node in compress(args.nodes, passes)]
        except orjson.JSONEncodeError:
            raise BadRequest("ExtenderArgs.Nodes.items: a node is nested too deeply to be sent back") from None
        nodes_field: dict[str, Any] | None = {"metadata": {}, "items": items}
        names_field: list[str] | None = None
    else:
        assert args.node_names is not None
        nodes_field, names_field = None, list(compress(args.node_names, passes))
    return {
        "Nodes": nodes_field,
        "NodeNames": names_field,
        "FailedNodes": dict(failed),
        "FailedAndUnresolvableNodes": dict(unresolvable),
        "Error": "",
    }


def host_priorities(names: Sequence[str], scores: Sequence[int]) -> list[dict[str, Any]]:
    """HostPriorityList: a top-level JSON array of ``{"Host", "Score"}`` with integer scores."""
    return [{"Host": name, "Score": score} for name, score in zip(names, scores)]
