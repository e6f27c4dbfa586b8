"""Workloads: the Alibaba GPU trace with the project's MIG mapping, and seeded synthetic mixes.

The trace is ``cluster-trace-gpu-v2023`` of https://github.com/alibaba/clusterdata (the USENIX ATC'23 FGD
paper's): a node list (``sn,...,gpu,model``) and pod lists of fractional GPU requests (``num_gpu``,
``gpu_milli``, ``creation_time``, ``deletion_time``...). The MIG mapping, the same in every run so that figures
stay comparable:

- ``num_gpu`` 0: a CPU-only task, dropped;
- one GPU with ``gpu_milli`` below 1000: one instance of the smallest profile whose share of the 7 compute
  slices covers the fraction (<=142 1g, <=285 2g, <=428 3g, <=571 4g, else 7g), the model's base profile of
  that size (the 1-memory-slice 1g, not the 2-slot one or ``+me``);
- a whole GPU: one 7g; ``num_gpu`` = k > 1: k 7g instances on one node;
- each node with GPUs keeps its GPU count, all of one model for the run;
- pods arrive in ``creation_time`` order and run until ``deletion_time`` (an hour when that is missing or
  not later).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from ..model.catalog import GpuModel
from ..model.demand import PodDemand
from ..model.fragmentation import parse_mix


class WorkloadError(ValueError):
    """A trace or mix that cannot be read; the message names the file, row or entry."""


@dataclass(frozen=True, slots=True)
class SimPod:
    name: str
    shape: str
    """Profile shape of its instances (``1g``, ``1g.2slot``... ``7g``)."""
    count: int
    demand: PodDemand
    slices: int
    """Compute slices it asks for."""
    arrival_s: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    gpus: int


def shape_for_milli(num_gpu: int, gpu_milli: int) -> tuple[str, int] | None:
    """The trace's MIG mapping (module docstring): (shape, instance count) for a task, None if CPU-only."""
    if num_gpu <= 0:
        return None
    if num_gpu > 1 or gpu_milli >= 1000:
        return ("7g", num_gpu)
    for limit, shape in ((142, "1g"), (285, "2g"), (428, "3g"), (571, "4g")):
        if gpu_milli <= limit:
            return (shape, 1)
    return ("7g", 1)


def make_pod(model: GpuModel, name: str, shape: str, count: int, arrival_s: float, duration_s: float) -> SimPod:
    profile = model.profile_for_shape(shape)
    if profile is None:
        raise WorkloadError(f"{model.name} has no profile of shape {shape}")
    return SimPod(
        name,
        shape,
        count,
        PodDemand(mig=((profile.name, count),)),
        profile.compute_slices * count,
        arrival_s,
        duration_s,
    )


def read_nodes(path: Path) -> list[NodeSpec]:
    """Every GPU node of the node list (``sn,...,gpu,model``), with its GPU count."""
    nodes = []
    try:
        with path.open(newline="") as handle:
            for row_number, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    count = int(row["gpu"])
                except (KeyError, TypeError, ValueError):
                    raise WorkloadError(f"{path}:{row_number}: column 'gpu' is not a whole number") from None
                if count > 0:
                    nodes.append(NodeSpec(row.get("sn") or f"node-{row_number}", count))
    except OSError as exc:
        raise WorkloadError(f"cannot read {path}: {exc.strerror}") from None
    if not nodes:
        raise WorkloadError(f"{path}: no GPU node")
    return nodes


def read_pods(path: Path, model: GpuModel) -> list[SimPod]:
    """MIG pods of a trace in ``creation_time`` order (rows without times keep their file order)."""
    pods = []
    try:
        with path.open(newline="") as handle:
            for row_number, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    num_gpu = int(row["num_gpu"])
                    milli = int(row["gpu_milli"] or 0)
                    created = float(row.get("creation_time") or row_number)
                    deleted = float(row.get("deletion_time") or 0)
                except (KeyError, TypeError, ValueError):
                    raise WorkloadError(f"{path}:{row_number}: num_gpu/gpu_milli/times are not numbers") from None
                mapped = shape_for_milli(num_gpu, milli)
                if mapped is None:
                    continue
                duration = deleted - created if deleted > created else 3600.0
                pods.append(make_pod(model, row.get("name") or f"pod-{row_number}", *mapped, created, duration))
    except OSError as exc:
        raise WorkloadError(f"cannot read {path}: {exc.strerror}") from None
    pods.sort(key=lambda p: p.arrival_s)  # stable: equal times keep the file's order
    if not pods:
        raise WorkloadError(f"{path}: no MIG task")
    return pods


def synthetic_pods(
    model: GpuModel,
    mix: str,
    count: int,
    seed: int,
    mean_interarrival_s: float = 30.0,
    mean_duration_s: float = 3600.0,
) -> list[SimPod]:
    """``count`` single-instance pods drawn from ``mix`` (seeded), Poisson arrivals, exponential durations."""
    weights = parse_mix(mix)
    shapes = [s for s in weights if weights[s] > 0 and model.profile_for_shape(s) is not None]
    if not shapes:
        raise WorkloadError(f"mix {mix!r} has no shape that {model.name} offers")
    rng = random.Random(seed)
    pods = []
    now = 0.0
    for i in range(count):
        now += rng.expovariate(1.0 / mean_interarrival_s)
        shape = rng.choices(shapes, [weights[s] for s in shapes])[0]
        pods.append(make_pod(model, f"syn-{i:06d}", shape, 1, now, rng.expovariate(1.0 / mean_duration_s)))
    return pods


def fill_sequence(pods: list[SimPod], capacity_slices: int, arrival: float) -> list[SimPod]:
    """Pods in order until submitted slices reach ``arrival`` x capacity, cycling the list if it runs out."""
    target = arrival * capacity_slices
    chosen: list[SimPod] = []
    submitted = 0
    offset = 0.0
    span = (pods[-1].arrival_s - pods[0].arrival_s) + 1.0
    lap = 0
    while submitted < target:
        for pod in pods:
            if submitted >= target:
                break
            name = pod.name if lap == 0 else f"{pod.name}~{lap}"
            chosen.append(
                SimPod(name, pod.shape, pod.count, pod.demand, pod.slices, pod.arrival_s + offset, pod.duration_s)
            )
            submitted += pod.slices
        lap += 1
        offset += span
    return chosen
