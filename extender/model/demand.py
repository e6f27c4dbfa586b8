"""What a pod asks for: MIG instances per profile on one node, by the Kubernetes effective-request rule."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dra.fit import ClaimsDemand

MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
MAX_RESOURCE_NAME = len("nvidia.com/") + 63  # a qualified name: prefix, then at most 63 characters
GPU_RESOURCE = "nvidia.com/gpu"

_INTEGER = re.compile(r"^\+?[0-9]+$")
# Device plugins cap a node at a few hundred instances; anything far beyond is a typo or an attack.
MAX_INSTANCES_PER_POD = 1024


class DemandError(ValueError):
    """A pod's GPU resources cannot be read; the message names the container and the value."""


@dataclass(frozen=True, slots=True)
class PodDemand:
    """MIG instances per profile (as spelled in the resource name) and whole ``nvidia.com/gpu`` count."""

    mig: tuple[tuple[str, int], ...] = ()
    gpus: int = 0
    claims: ClaimsDemand | None = None
    """MIG asked for through DRA ResourceClaims (and extended resources a DeviceClass backs), if any."""

    @property
    def is_empty(self) -> bool:
        return not self.mig and not self.gpus and self.claims is None

    def text(self) -> str:
        """``1x 3g.40gb + 2x 1g.10gb``: stable, so that kube-scheduler can aggregate messages by it."""
        if self.claims is not None:
            return self.claims.text
        return " + ".join(f"{count}x {name}" for name, count in self.mig) or f"{self.gpus}x nvidia.com/gpu"


def _quantity(value: object, where: str) -> int:
    """An extended-resource quantity: Kubernetes allows only whole numbers for them."""
    if isinstance(value, bool):
        raise DemandError(f"{where}: {value!r} is not a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        # A JSON number such as 2.0 is an integer to JSON Schema, and Go's Quantity reads it as 2.
        number = int(value)
    elif isinstance(value, str) and _INTEGER.match(value.strip()):
        digits = value.strip().lstrip("+").lstrip("0") or "0"
        if len(digits) > len(str(MAX_INSTANCES_PER_POD)):
            # int() refuses strings of over 4,300 digits with a bare ValueError; any such count is out of range.
            raise DemandError(f"{where}: {value[:24]!r}... is outside 0..{MAX_INSTANCES_PER_POD}")
        number = int(digits)
    else:
        raise DemandError(f"{where}: {value!r} is not a whole number of devices")
    if number < 0 or number > MAX_INSTANCES_PER_POD:
        raise DemandError(f"{where}: {number} is outside 0..{MAX_INSTANCES_PER_POD}")
    return number


def _optional(obj: Mapping[str, Any], key: str, default: Any) -> Any:
    """``obj[key]``, with a JSON null or absence read as ``default`` (but ``[]`` kept, to be rejected)."""
    value = obj.get(key)
    return default if value is None else value


def _container_gpu_resources(container: Mapping[str, Any], where: str) -> dict[str, int]:
    resources = _optional(container, "resources", {})
    if not isinstance(resources, Mapping):
        raise DemandError(f"{where}.resources is not an object")
    found: dict[str, int] = {}
    # Requests win; an extended resource given only as a limit is requested at the limit.
    for section in ("limits", "requests"):
        values = _optional(resources, section, {})
        if not isinstance(values, Mapping):
            raise DemandError(f"{where}.resources.{section} is not an object")
        for name, value in values.items():
            if isinstance(name, str) and (name == GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX)):
                if len(name) > MAX_RESOURCE_NAME:
                    # The API server refuses such names; here one would be copied into every node's reason.
                    raise DemandError(f"{where}.resources.{section}: resource name {name[:40]!r}... is too long")
                found[name] = _quantity(value, f"{where}.resources.{section}[{name}]")
    return found


def _add(total: dict[str, int], more: Mapping[str, int]) -> dict[str, int]:
    return {k: total.get(k, 0) + more.get(k, 0) for k in total.keys() | more.keys()}


def _max(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {k: max(a.get(k, 0), b.get(k, 0)) for k in a.keys() | b.keys()}


def _containers(spec: Mapping[str, Any], key: str) -> Iterable[tuple[int, Mapping[str, Any]]]:
    items = _optional(spec, key, [])
    if not isinstance(items, list):
        raise DemandError(f"spec.{key} is not a list")
    for index, container in enumerate(items):
        if not isinstance(container, Mapping):
            raise DemandError(f"spec.{key}[{index}] is not an object")
        yield index, container


def pod_demand(pod: Mapping[str, Any]) -> PodDemand:
    """The GPU demand of a pod (a Kubernetes Pod as a JSON object).

    Effective request per resource, as the scheduler computes it: the larger of the sum over regular
    containers plus restartable init containers (sidecars), and each init container's request plus the
    sidecars started before it.
    """
    spec = _optional(pod, "spec", {})
    if not isinstance(spec, Mapping):
        raise DemandError("spec is not an object")
    regular: dict[str, int] = {}
    for index, container in _containers(spec, "containers"):
        regular = _add(regular, _container_gpu_resources(container, f"spec.containers[{index}]"))
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for index, container in _containers(spec, "initContainers"):
        wants = _container_gpu_resources(container, f"spec.initContainers[{index}]")
        if container.get("restartPolicy") == "Always":
            sidecars = _add(sidecars, wants)
            init_peak = _max(init_peak, sidecars)
        else:
            init_peak = _max(init_peak, _add(sidecars, wants))
    effective = _max(_add(regular, sidecars), init_peak)
    mig = tuple(
        sorted(
            (name.removeprefix(MIG_RESOURCE_PREFIX), count)
            for name, count in effective.items()
            if name.startswith(MIG_RESOURCE_PREFIX) and count > 0
        )
    )
    return PodDemand(mig=mig, gpus=effective.get(GPU_RESOURCE, 0))
