"""``mig-extender report``: the slice map of each GPU, the text and PNG renderings, and the command on a snapshot
and on a live API server (a local stand-in speaking the Kubernetes list API to kubernetes-asyncio)."""

from __future__ import annotations

import json
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from extender.cli import main
from extender.metrics import default_weights
from extender.model.catalog import model_named
from extender.model.state import GpuState
from extender.report import COLORS, FONT, Mark, build_report, encode_png, gpu_row, render_png, render_text
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


# --- PNG -------------------------------------------------------------------------------------------------------


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """A minimal reader of what encode_png writes (8-bit RGB, filter 0), checking every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks[kind] = body
        position += 12 + length
    width, height, depth, color, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, color) == (8, 2) and b"IEND" in chunks
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = width * 3 + 1
    assert len(raw) == stride * height
    rows = [raw[y * stride : (y + 1) * stride] for y in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, [row[1:] for row in rows]


def pixel_colors(rows: list[bytes]) -> Counter[tuple[int, int, int]]:
    found: Counter[tuple[int, int, int]] = Counter()
    for row in rows:
        for x in range(0, len(row), 3):
            found[(row[x], row[x + 1], row[x + 2])] += 1
    return found


def test_encode_png_round_trip() -> None:
    pixels = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])
    width, height, rows = decode_png(encode_png(2, 2, pixels))
    assert (width, height) == (2, 2) and b"".join(rows) == pixels


def test_png_draws_every_kind_of_slice(demo_view: ClusterView) -> None:
    width, height, rows = decode_png(render_png(demo_report(demo_view)))
    assert width > 500 and height > 300
    colors = pixel_colors(rows)
    for mark in (Mark.USED, Mark.FREE, Mark.STRANDED):
        assert colors[COLORS[mark]] > 100, mark
    # One 9-pixel cell per memory slice: 60 GPUs x 8 slices, and instance edges only narrow cells.
    assert colors[COLORS[Mark.FREE]] + colors[COLORS[Mark.USED]] < 60 * 8 * 9 * 16 + 4 * 9 * 16


def test_png_of_many_nodes_wraps_into_columns(demo_view: ClusterView) -> None:
    report = demo_report(demo_view)
    many = type(report)(report.source, report.nodes * 12, report.weights)  # 96 node cards
    width, height, _ = decode_png(render_png(many))
    one_width, one_height, _ = decode_png(render_png(report))
    # 96 cards in columns of 40: three columns, each about five times as tall as the 8-node map
    assert width > one_width and height < 6 * one_height
    limited_width, _, _ = decode_png(render_png(many, max_nodes=8))
    assert limited_width < width


def test_the_font_has_every_character_of_node_and_profile_names() -> None:
    for char in "abcdefghijklmnopqrstuvwxyz0123456789-._:/()%,=+?;'[]@#*":
        assert char.upper() in FONT
        assert len(FONT[char.upper()]) == 7


# --- the command -----------------------------------------------------------------------------------------------


def test_report_command_on_a_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "fleet.png"
    assert main(["report", "--snapshot", str(DEMO_SNAPSHOT), "--png", str(png), "--mix", "inference"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"mig-extender report: 8 GPU nodes, 60 GPUs (snapshot {DEMO_SNAPSHOT})")
    assert "mix 1g=0.45" in out and out.rstrip().endswith(f"wrote {png}")
    decode_png(png.read_bytes())


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
    # One list per kind, no watch.
    assert len(_FakeApi.seen) == 3 and not any("watch=" in p for p in _FakeApi.seen)
    # The demo's mig-parted ConfigMap was read: a100-balanced resolves its layout from it.
    assert "a100-balanced  8x A100-40GB  mig-parted-config" in out


def test_report_command_names_a_cluster_it_cannot_list(fake_api: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _FakeApi.lists = {}  # every list now fails with a server error
    assert main(["report", "--kubeconfig", str(fake_api)]) == 1
    assert "listing the cluster failed" in capsys.readouterr().err
