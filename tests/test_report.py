"""``mig-extender report``: the slice map of each GPU, the text and PNG renderings, and the command on a snapshot
and on a live API server (a local stand-in speaking the Kubernetes list API to kubernetes-asyncio)."""

from __future__ import annotations

import io
import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy
import pytest
import yaml
from PIL import Image

from extender.cli import main
from extender.metrics import default_weights
from extender.model.catalog import model_named
from extender.model.state import GpuState
from extender.report import (
    COLORS,
    Drawing,
    GpuLine,
    Mark,
    build_report,
    compute_groups,
    gpu_row,
    layout_png,
    render_png,
    render_text,
    slice_counts,
)
from extender.view.store import ClusterView
from tests.builders import gpu
from tests.conftest import DEMO_SNAPSHOT

SEVEN_1G = " ".join(f"1g.10gb@{i}" for i in range(7))

# --- the map of one GPU ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "row"),
    [
        (gpu("A100-40GB", "2g.10gb@0 1g.5gb@2 1g.5gb@3 3g.20gb@4", used="1g.5gb@2 3g.20gb@4"), "[---|#|-|#######]"),
        (gpu("A100-40GB", " ".join(f"1g.5gb@{i}" for i in range(7)), used="1g.5gb@0"), "[#|-|-|-|-|-|-|x]"),
        (gpu("H100-80GB", "3g.40gb@0 2g.20gb@4", used="3g.40gb@0"), "[#######|---|xxx]"),
        (gpu("H100-80GB", "3g.40gb@0 3g.40gb@4"), "[-------|-------]"),
        (gpu("H200-141GB", dynamic=True), "[---------------]"),
        (gpu("H200-141GB", "3g.71gb@0", used="3g.71gb@0", dynamic=True), "[#######|-------]"),
        # seven used 1g on a dynamic GPU: the 1g limit is reached and no other profile reaches slice 7
        (gpu("H100-80GB", SEVEN_1G, used=SEVEN_1G, dynamic=True), "[#|#|#|#|#|#|#|x]"),
        (gpu("A30", "2g.12gb@0 1g.6gb@2", used="2g.12gb@0"), "[###|-|x]"),
    ],
)
def test_gpu_rows(state: GpuState, row: str) -> None:
    assert gpu_row(state) == row


def test_mig_disabled_rows() -> None:
    model = model_named("H100-80GB")
    assert gpu_row(GpuState(0, model, (), mig_enabled=False)) == "[" + "~" * 15 + "]"
    assert gpu_row(GpuState(0, model, (), mig_enabled=False, whole_gpu_used=True)) == "[" + "#" * 15 + "]"


# --- text ------------------------------------------------------------------------------------------------------


def demo_report(demo_view: ClusterView) -> Any:
    return build_report(demo_view, default_weights(), "snapshot demo")


def test_text_lists_every_gpu_with_the_metrics_counts(demo_view: ClusterView) -> None:
    text = render_text(demo_report(demo_view))
    lines = text.splitlines()
    assert lines[0] == "mig-extender report: 8 GPU nodes, 60 GPUs (snapshot demo)"
    assert sum(1 for line in lines if line.startswith("  gpu")) == 60
    header = next(line for line in lines if line.startswith("h100-idle-3g "))
    assert "8x H100-80GB" in header and "used 0/56 free 56 stranded 8" in header and "fits 3g.40gb" in header
    exact = next(line for line in lines if line.startswith("h100-exact "))
    assert "node-annotation (exact)" in exact
    dynamic = [line for line in lines[lines.index(next(x for x in lines if x.startswith("h200-dynamic "))) :]]
    assert dynamic[1] == "  gpu0   [#######|#######]  used 6/7 free 1 stranded 1  fits none"
    assert dynamic[2].endswith("fits 7g.141gb")


def test_text_max_nodes(demo_view: ClusterView) -> None:
    text = render_text(demo_report(demo_view), max_nodes=2)
    assert "a100-balanced " in text and "a100-small " in text and "h100-balanced " not in text
    assert text.rstrip().endswith("... and 6 more nodes (--max-nodes)")


# --- PNG ---------------------------------------------------------------------------------------------------------


def read_png(data: bytes) -> Any:
    """The PNG's pixels as an RGB array (rows top to bottom), after checking it is a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return numpy.asarray(image.convert("RGB"))


def cell_marks(drawing: Drawing, pixels: Any) -> dict[tuple[str, int], Counter[Mark]]:
    """Per (node, GPU): the marks of its cells as read back from the pixels at each cell's centre."""
    by_color = {color: mark for mark, color in COLORS.items()}
    found: dict[tuple[str, int], Counter[Mark]] = {}
    for cell in drawing.cells:
        if cell.node:
            color = tuple(int(v) for v in pixels[cell.y + cell.h // 2, cell.x + cell.w // 2])
            assert color == COLORS[cell.mark], (cell, color)
            found.setdefault((cell.node, cell.gpu), Counter())[by_color[color]] += 1
    return found


def test_png_cells_are_the_counts(demo_view: ClusterView) -> None:
    """Blue cells are the used compute slices, green and red the free ones, red the stranded ones, per GPU."""
    report = demo_report(demo_view)
    drawing = layout_png(report)
    pixels = read_png(render_png(report))
    assert pixels.shape == (drawing.height, drawing.width, 3)
    marks = cell_marks(drawing, pixels)
    assert len(marks) == 60
    for node in report.nodes:
        for line in node.gpus:
            seen, counts = marks[(node.summary.name, line.gpu.index)], line.counts
            assert seen[Mark.USED] == counts.used, (node.summary.name, line.gpu.index)
            assert seen[Mark.FREE] + seen[Mark.STRANDED] == counts.free, (node.summary.name, line.gpu.index)
            assert seen[Mark.STRANDED] == counts.stranded, (node.summary.name, line.gpu.index)
    # h100-idle-3g: two free 3g instances per GPU, and the 7th compute slice of each is stranded
    idle = marks[("h100-idle-3g", 0)]
    assert idle == Counter({Mark.FREE: 6, Mark.STRANDED: 1})
    assert sum(sum(m.values()) for m in marks.values()) == sum(
        line.counts.capacity for n in report.nodes for line in n.gpus
    )


@pytest.mark.parametrize(
    ("state", "groups"),
    [
        # instances in the order used, free; one group per instance
        (gpu("A100-40GB", "2g.10gb@0 1g.5gb@2 1g.5gb@3 3g.20gb@4", used="1g.5gb@2 3g.20gb@4"), "U1 U3 F2 F1"),
        (gpu("H100-80GB", "3g.40gb@0 3g.40gb@4"), "F3 F3 S1"),
        (gpu("H100-80GB", "3g.40gb@0 2g.20gb@4", used="3g.40gb@0"), "U3 F2 S2"),
        # a dynamic GPU's free room is one group (free placements, not instances); with 3g at 0 used only a 3g
        # fits at 4, so one compute slice is stranded though every memory slice is reachable
        (gpu("H200-141GB", "3g.71gb@0", used="3g.71gb@0", dynamic=True), "U3 F3 S1"),
        (gpu("H100-80GB", SEVEN_1G, used=SEVEN_1G, dynamic=True), "U1 U1 U1 U1 U1 U1 U1"),
        (GpuState(0, model_named("H100-80GB"), (), mig_enabled=False), "F7"),
        (GpuState(0, model_named("H100-80GB"), (), mig_enabled=False, whole_gpu_used=True), "U7"),
    ],
)
def test_compute_groups(state: GpuState, groups: str) -> None:
    letter = {Mark.USED: "U", Mark.FREE: "F", Mark.STRANDED: "S"}
    line = GpuLine(state, slice_counts(state))
    assert " ".join(f"{letter[m]}{n}" for m, n in compute_groups(line)) == groups


def test_png_labels_name_nodes_and_profiles_in_their_own_case(demo_view: ClusterView) -> None:
    report = demo_report(demo_view)
    texts = [label.text for label in layout_png(report).labels]
    assert texts[0] == "mig-extender report: 8 GPU nodes, 60 GPUs, 363 free compute slices, fragmentation ratio 0.75"
    for node in report.nodes:
        assert node.summary.name in texts
    assert "8x H100-80GB  static  mig-parted-config" in texts
    assert "8x H200-141GB  dynamic  allocatable" in texts
    # under each GPU: its index and the largest profile that fits, e.g. h100-exact's
    assert "0 2g.20gb 1 2g.20gb 2 3g.40gb 3 3g.40gb" in {" ".join(t.split()) for t in texts}
    # the counts beside h100-idle-3g, each segment in the colour of the cells it counts
    idle = [label for label in layout_png(report).labels if label.text in {"used 0/56", "free 56", "stranded 8"}]
    assert [(label.text, label.color) for label in idle] == [
        ("used 0/56", COLORS[Mark.USED]),
        ("free 56", COLORS[Mark.FREE]),
        ("stranded 8", COLORS[Mark.STRANDED]),
    ]
    assert any(t.startswith("stranded: free, but no instance can use it") for t in texts)


def test_png_shortens_long_node_names(demo_view: ClusterView) -> None:
    report = demo_report(demo_view)
    long_name = "gpu-pool-" + "x" * 60 + "-zone-b-0017"
    node = report.nodes[0]
    renamed = replace(node, summary=replace(node.summary, name=long_name))
    texts = [label.text for label in layout_png(replace(report, nodes=(renamed,))).labels]
    short = next(t for t in texts if t.startswith("gpu-pool-"))
    assert len(short) == 40 and short.endswith("-zone-b-0017") and "…" in short


def test_png_of_many_nodes_wraps_into_columns(demo_view: ClusterView) -> None:
    report = demo_report(demo_view)
    many = replace(report, nodes=report.nodes * 12)  # 96 node rows
    drawing, one = layout_png(many), layout_png(report)
    # 96 rows in columns of at most 60: two columns of 48, each six times as tall as the 8-node map's rows
    assert drawing.width > 1.8 * one.width and drawing.height < 7 * one.height
    pixels = read_png(render_png(many))
    assert pixels.shape == (drawing.height, drawing.width, 3)
    cell_marks(drawing, pixels)
    capped = layout_png(many, max_nodes=8)
    assert (capped.width, capped.height) == (one.width, one.height) or capped.width < drawing.width
    assert any("the first 8 nodes by name are drawn (--png-max-nodes)" in label.text for label in capped.labels)


# --- the command -----------------------------------------------------------------------------------------------


def test_report_command_on_a_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "fleet.png"
    assert main(["report", "--snapshot", str(DEMO_SNAPSHOT), "--png", str(png), "--mix", "inference"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"mig-extender report: 8 GPU nodes, 60 GPUs (snapshot {DEMO_SNAPSHOT})")
    assert "mix 1g=0.45" in out and out.rstrip().endswith(f"wrote {png}")
    assert read_png(png.read_bytes()).shape[0] > 300


def test_report_png_without_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    png = tmp_path / "fleet.png"
    assert main(["report", "--snapshot", str(DEMO_SNAPSHOT), "--png", str(png)]) == 2
    captured = capsys.readouterr()
    assert captured.err == "mig-extender: cannot draw --png: matplotlib is not installed (pip install '.[sim]')\n"
    assert captured.out == "" and not png.exists()


def test_report_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--snapshot", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read snapshot" in capsys.readouterr().err
    assert main(["report", "--snapshot", str(DEMO_SNAPSHOT), "--mix", "1g=x"]) == 2
    assert "demand mix entry" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--snapshot", str(DEMO_SNAPSHOT), "--kubeconfig", "k"])


class _FakeApi(BaseHTTPRequestHandler):
    """Serves the demo snapshot's objects as the API server's list calls return them."""

    lists: ClassVar[dict[str, list[dict[str, Any]]]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.seen.append(self.path)
        kind = {
            "/api/v1/nodes": "Node",
            "/api/v1/pods": "Pod",
            "/api/v1/namespaces/gpu-operator/configmaps": "ConfigMap",
        }.get(path)
        if kind is None or kind not in self.lists:
            self.send_response(404 if kind is None else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(
            {"kind": f"{kind}List", "apiVersion": "v1", "metadata": {"resourceVersion": "7"}, "items": self.lists[kind]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_api(tmp_path: Path) -> Iterator[Path]:
    snapshot = yaml.safe_load(DEMO_SNAPSHOT.read_text())
    lists: dict[str, list[dict[str, Any]]] = {"Node": [], "Pod": [], "ConfigMap": []}
    for item in snapshot["items"]:
        lists[item["kind"]].append(item)
    _FakeApi.lists = lists
    _FakeApi.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    try:
        yield kubeconfig
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_report_command_lists_a_live_cluster_once(fake_api: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--kubeconfig", str(fake_api)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"mig-extender report: 8 GPU nodes, 60 GPUs (cluster via kubeconfig {fake_api})")
    assert "h100-idle-3g  8x H100-80GB" in out
    # One list per kind, no watch; this API server serves no resource.k8s.io/v1 (404): its four kinds are none.
    assert len(_FakeApi.seen) == 7 and not any("watch=" in p for p in _FakeApi.seen)
    assert sum("/apis/resource.k8s.io/v1/" in p for p in _FakeApi.seen) == 4
    # The demo's mig-parted ConfigMap was read: a100-balanced resolves its layout from it.
    assert "a100-balanced  8x A100-40GB  mig-parted-config" in out


def test_report_command_names_a_cluster_it_cannot_list(fake_api: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _FakeApi.lists = {}  # every list now fails with a server error
    assert main(["report", "--kubeconfig", str(fake_api)]) == 1
    assert "listing the cluster failed" in capsys.readouterr().err
