"""``mig-extender report`` on a cluster with DRA nodes: NVIDIA's DRA driver's ResourceSlices and the devices
ResourceClaims hold are mapped like any other node's GPUs (source ``resource-slices``), beside device-plugin nodes,
and the counts are the metrics' own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from extender.cli import main
from extender.metrics import default_weights
from extender.model.accounting import node_slices
from extender.model.catalog import model_named
from extender.model.dra.driver import DRIVER, dynamic_mig_slices, static_mig_slices
from extender.model.placement import Placement
from extender.report import build_report, layout_png
from extender.view.snapshot import load_snapshot
from extender.view.store import ClusterView

H100 = model_named("H100-80GB")
MIG_CLASS = f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'mig'"
HELD = {
    "dra-dynamic-a": ("gpu-0-mig-1g10gb-19-0", "gpu-1-mig-3g40gb-9-4", "gpu-1-mig-2g20gb-14-0"),
    "dra-static": ("gpu-0-mig-3g40gb-9-4",),
}
"""Devices that allocated claims hold, per node; dra-dynamic-b is idle."""


def node(name: str, labels: dict[str, str] | None = None, allocatable: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "status": {"allocatable": allocatable or {}},
    }


def allocated_claim(name: str, node_name: str, devices: tuple[str, ...]) -> dict[str, Any]:
    requests = [{"name": "mig", "exactly": {"deviceClassName": "mig.nvidia.com", "count": len(devices)}}]
    results = [{"request": "mig", "driver": DRIVER, "pool": node_name, "device": d} for d in devices]
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
        "spec": {"devices": {"requests": requests}},
        "status": {
            "allocation": {"devices": {"results": results}, "nodeSelector": {"nodeSelectorTerms": [term]}},
            "reservedFor": [{"resource": "pods", "name": f"run-{node_name}", "uid": f"uid-run-{node_name}"}],
        },
    }


def snapshot() -> dict[str, Any]:
    three, two = H100.profile("3g.40gb"), H100.profile("2g.20gb")
    items: list[dict[str, Any]] = [
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": "mig.nvidia.com"},
            "spec": {"selectors": [{"cel": {"expression": MIG_CLASS}}]},
        },
        node("dra-dynamic-a"),
        *dynamic_mig_slices("dra-dynamic-a", H100, 2),
        node("dra-dynamic-b"),
        *dynamic_mig_slices("dra-dynamic-b", H100, 1),
        node("dra-static"),
        *static_mig_slices("dra-static", H100, [[Placement(0, three), Placement(4, three)], [Placement(0, two)]]),
        node(
            "plugin-node",
            {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "1",
             "nvidia.com/mig.config": "all-balanced"},
            {"nvidia.com/mig-1g.10gb": "2", "nvidia.com/mig-2g.20gb": "1", "nvidia.com/mig-3g.40gb": "1"},
        ),
    ]  # fmt: skip
    for node_name, devices in HELD.items():
        items.append(allocated_claim(f"held-{node_name}", node_name, devices))
    return {"apiVersion": "v1", "kind": "List", "items": items}


@pytest.fixture
def snapshot_file(tmp_path: Path) -> Path:
    path = tmp_path / "dra.yaml"
    path.write_text(yaml.safe_dump(snapshot()))
    return path


def test_report_maps_dra_nodes_like_other_nodes(snapshot_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--snapshot", str(snapshot_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"mig-extender report: 4 GPU nodes, 6 GPUs (snapshot {snapshot_file})"

    def block(name: str) -> list[str]:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}  "))
        end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  gpu")), len(lines))
        return lines[start:end]

    a = block("dra-dynamic-a")
    assert a[0].startswith("dra-dynamic-a  2x H100-80GB  resource-slices (dra), dynamic  used 6/14 free 8 stranded 0")
    assert a[1] == "  gpu0   [#|-------------]  used 1/7 free 6 stranded 0  fits 3g.40gb"
    assert a[2] == "  gpu1   [###|---|#######]  used 5/7 free 2 stranded 0  fits 2g.20gb"
    assert block("dra-dynamic-b")[1] == "  gpu0   [---------------]  used 0/7 free 7 stranded 0  fits 7g.80gb"
    static = block("dra-static")
    assert static[0].startswith("dra-static  2x H100-80GB  resource-slices (dra), static  used 3/14")
    assert static[1] == "  gpu0   [-------|#######]  used 3/7 free 4 stranded 1  fits 3g.40gb"
    assert block("plugin-node")[0].startswith("plugin-node  1x H100-80GB  mig-parted-config (derived-layout)")


def test_dra_rows_of_the_png_and_their_counts_are_the_views(snapshot_file: Path) -> None:
    view = ClusterView()
    load_snapshot(view, str(snapshot_file))
    report = build_report(view, default_weights(), "dra")
    states = {s.name: s for s in view.node_states() if s.devices is not None}
    assert sorted(states) == ["dra-dynamic-a", "dra-dynamic-b", "dra-static"]
    for line in report.nodes:
        if line.summary.name in states:
            assert line.summary == node_slices(states[line.summary.name])
    drawing = layout_png(report)
    subtitles = [label.text for label in drawing.labels if label.text.endswith("resource-slices")]
    assert sorted(subtitles) == ["1x H100-80GB  dynamic  resource-slices", "2x H100-80GB  dynamic  resource-slices",
                                 "2x H100-80GB  static  resource-slices"]  # fmt: skip
    used_cells = [c for c in drawing.cells if c.node == "dra-dynamic-a" and c.mark.name == "USED"]
    assert len(used_cells) == 6
