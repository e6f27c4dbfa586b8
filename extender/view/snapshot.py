"""Load a cluster view from a file: what ``kubectl get nodes,pods,configmaps -A -o yaml`` prints, with DRA
objects when ``resourceslices,resourceclaims,resourceclaimtemplates,deviceclasses`` are added to the kinds.

Accepts a Kubernetes ``List`` (or ``NodeList``/``PodList``/``ConfigMapList``/``ResourceSliceList``...) in YAML
or JSON, several YAML documents, or a bare list of objects. Objects of other kinds are skipped.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import yaml

from .store import DRA_KINDS, ClusterView, Kind

_KINDS = {
    "Node": Kind.NODES,
    "Pod": Kind.PODS,
    "ConfigMap": Kind.CONFIG,
    "ResourceSlice": Kind.RESOURCE_SLICES,
    "ResourceClaim": Kind.RESOURCE_CLAIMS,
    "ResourceClaimTemplate": Kind.CLAIM_TEMPLATES,
    "DeviceClass": Kind.DEVICE_CLASSES,
}


class SnapshotError(ValueError):
    """A snapshot file that cannot be read; the message names the file and the problem."""


def _documents(text: str, source: str) -> list[Any]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return [orjson.loads(text)]
        except orjson.JSONDecodeError as exc:
            raise SnapshotError(f"{source}: not valid JSON: {exc}") from None
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SnapshotError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise SnapshotError(f"{source}: nested too deeply to read") from None


def _objects(document: Any, source: str) -> Iterator[Mapping[str, Any]]:
    if isinstance(document, list):
        items: Any = document
        list_kind = None
    elif isinstance(document, Mapping) and "items" in document:
        items = document["items"]
        list_kind = str(document.get("kind", "List")).removesuffix("List") or None
    elif isinstance(document, Mapping) and "kind" in document:
        items = [document]
        list_kind = None
    else:
        raise SnapshotError(f"{source}: expected a Kubernetes List, a list of objects or an object")
    if not isinstance(items, list):
        raise SnapshotError(f"{source}: 'items' must be a list")
    for position, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise SnapshotError(f"{source}: items[{position}] is not an object")
        # Items of typed lists (NodeList...) carry no kind of their own.
        yield item if "kind" in item or not list_kind else {**item, "kind": list_kind}


def _parse_records(text: str, source: str) -> dict[Kind, list[Any]]:
    """The view's records of a snapshot's objects, grouped by kind (``ClusterView.parse``)."""
    parser = ClusterView()
    records: dict[Kind, list[Any]] = {kind: [] for kind in Kind}
    for document in _documents(text, source):
        for item in _objects(document, source):
            kind = _KINDS.get(str(item.get("kind")))
            if kind is not None:
                record = parser.parse(kind, item)
                if record is not None:
                    records[kind].append(record)
    return records


def _install(view: ClusterView, records: dict[Kind, list[Any]]) -> dict[str, int]:
    for kind, items in records.items():
        view.replace_parsed(kind, items)
    view.static = True
    # DRA kinds are counted when the snapshot has some (most clusters have none).
    return {str(kind): len(items) for kind, items in records.items() if items or kind not in DRA_KINDS}


def load_snapshot_text(view: ClusterView, text: str, source: str = "snapshot") -> dict[str, int]:
    """Replace ``view``'s contents with the snapshot's objects; returns how many of each kind it holds (DRA
    kinds only when it holds some)."""
    return _install(view, _parse_records(text, source))


def _parse_file(path: str) -> dict[Kind, list[Any]]:
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return _parse_records(text, path)


# Above this size the file is parsed in a child process: a parsed document of 100,000 pods takes
# several times the memory of the records kept from it, and the allocator would keep that peak for good.
CHILD_PARSE_BYTES = 8 * 1024 * 1024


def load_snapshot(view: ClusterView, path: str) -> dict[str, int]:
    try:
        size = pathlib.Path(path).stat().st_size
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc.strerror}") from None
    if size < CHILD_PARSE_BYTES:
        return _install(view, _parse_file(path))
    # fork: the child needs nothing but this function (forkserver and spawn would re-run __main__).
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        records = pool.submit(_parse_file, path).result()
    return _install(view, records)
