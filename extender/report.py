"""``mig-extender report``: the fleet's GPUs and MIG slices as a map, in the terminal and as a PNG.

Per node and per GPU, a row of memory slices marked used, free or stranded, with instance boundaries, the
compute-slice counts and the largest profile that still fits. The counts are the metrics' own
(:func:`extender.metrics.node_slices`), so the map and ``/metrics`` always agree. The PNG is written with the
standard library (zlib and struct) and a built-in 5x7 bitmap font: no imaging library needed.
"""

from __future__ import annotations

import asyncio
import enum
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from .kube.client import make_api_client
from .metrics import NodeSlices, SliceCounts, fragmentation_ratio, node_slices, slice_counts, source_of
from .model.catalog import Profile
from .model.placement import free_starts
from .model.state import GpuState
from .settings import Settings
from .view.snapshot import load_snapshot
from .view.store import ClusterView
from .view.watch import reflectors


class Mark(enum.StrEnum):
    """What one memory slice of a GPU is."""

    USED = "#"
    """Held by an instance that a pod uses."""
    FREE = "-"
    """In a free pre-made instance (static GPUs), or reachable by a free legal placement (dynamic GPUs)."""
    STRANDED = "x"
    """Free memory that no instance can use: outside every pre-made instance (static GPUs, until a
    re-layout), or reachable by no legal placement (dynamic GPUs)."""
    OFF = "~"
    """A GPU with MIG disabled and no pod: a whole-GPU pod can take it."""


LEGEND = (
    "memory slices: # used  - free  x stranded (no instance can use it)  ~ MIG disabled, idle  | instance edge; "
    "counts are compute slices; fits: the largest profile that still fits"
)


def slice_marks(gpu: GpuState) -> tuple[tuple[Mark, int], ...]:
    """Per memory slice: its mark and the region it belongs to (an instance, or a run of bare slices).

    Two neighbouring slices of the same region are drawn without an edge between them.
    """
    size = gpu.model.memory_slices
    if not gpu.mig_enabled:
        mark = Mark.USED if gpu.whole_gpu_used else Mark.OFF
        return tuple((mark, 0) for _ in range(size))
    marks: list[tuple[Mark, int] | None] = [None] * size
    for number, instance in enumerate(gpu.instances, start=1):
        mark = Mark.USED if instance.used else Mark.FREE
        for position in range(instance.placement.start, instance.placement.start + instance.profile.memory_slices):
            marks[position] = (mark, number)
    reachable = 0
    if gpu.dynamic:
        occupied = gpu.occupied
        for profile in gpu.model.base_profiles:
            if gpu.existing_count(profile) >= profile.max_instances:
                continue
            for start in free_starts(profile, occupied):
                reachable |= profile.occupancy(start)
    # Bare slices: -1 marks a run of free ones, -2 of stranded ones (regions of their own, edged from instances).
    return tuple(
        m if m is not None else ((Mark.FREE, -1) if reachable >> i & 1 else (Mark.STRANDED, -2))
        for i, m in enumerate(marks)
    )


def gpu_row(gpu: GpuState) -> str:
    """``[---|#|-|#######]``: a GPU's memory slices, ``|`` where one region ends and the next begins."""
    marks = slice_marks(gpu)
    text = []
    for i, (mark, region) in enumerate(marks):
        if i:
            previous_mark, previous_region = marks[i - 1]
            text.append(str(mark) if (previous_mark, previous_region) == (mark, region) else "|")
        text.append(str(mark))
    return "[" + "".join(text) + "]"


@dataclass(frozen=True, slots=True)
class GpuLine:
    gpu: GpuState
    counts: SliceCounts


@dataclass(frozen=True, slots=True)
class NodeLine:
    summary: NodeSlices
    gpus: tuple[GpuLine, ...]


@dataclass(frozen=True, slots=True)
class FleetReport:
    source: str
    nodes: tuple[NodeLine, ...]
    weights: Mapping[str, float]

    @property
    def gpu_count(self) -> int:
        return sum(len(n.gpus) for n in self.nodes)


def build_report(view: ClusterView, weights: Mapping[str, float], source: str) -> FleetReport:
    """Every GPU node of the view, by name."""
    lines = []
    for state in sorted(view.node_states(), key=lambda s: s.name):
        if state.gpus:
            gpus = tuple(GpuLine(g, slice_counts(g)) for g in state.gpus)
            lines.append(NodeLine(node_slices(state), gpus))
    return FleetReport(source, tuple(lines), dict(weights))


def _name(profile: Profile | None) -> str:
    return profile.name if profile is not None else "none"


def render_text(report: FleetReport, max_nodes: int | None = None) -> str:
    shown = report.nodes[:max_nodes] if max_nodes is not None else report.nodes
    total_f, ratio, free = fragmentation_ratio((n.summary for n in report.nodes), report.weights)
    out = [
        f"mig-extender report: {len(report.nodes)} GPU nodes, {report.gpu_count} GPUs ({report.source})",
        LEGEND,
        f"fleet: {free} free compute slices, F {total_f:.1f}, fragmentation ratio {ratio:.2f} "
        f"(mix {', '.join(f'{k}={v:.2f}' for k, v in sorted(report.weights.items()))})",
    ]
    width = max((len(gpu_row(g.gpu)) for n in shown for g in n.gpus), default=0)
    for node in shown:
        s = node.summary
        out.append("")
        for group in s.models:
            out.append(
                f"{s.name}  {len(group.gpus)}x {group.model.name}  {source_of(s.fidelity)} ({s.fidelity}), {s.mode}  "
                f"used {group.used}/{group.capacity} free {group.free} stranded {group.stranded}  "
                f"fits {_name(group.largest)}  F {group.fragmentation(report.weights):.1f}"
            )
        for line in node.gpus:
            c = line.counts
            out.append(
                f"  gpu{line.gpu.index:<3} {gpu_row(line.gpu):<{width}}  used {c.used}/{c.capacity} free {c.free} "
                f"stranded {c.stranded}  fits {_name(c.largest)}"
            )
    if len(shown) < len(report.nodes):
        out.append("")
        out.append(f"... and {len(report.nodes) - len(shown)} more nodes (--max-nodes)")
    return "\n".join(out) + "\n"


# --- PNG ------------------------------------------------------------------------------------------------

Color = tuple[int, int, int]
BACKGROUND: Color = (255, 255, 255)
INK: Color = (33, 33, 33)
GREY_INK: Color = (110, 110, 110)
COLORS: dict[Mark, Color] = {
    Mark.USED: (66, 110, 200),
    Mark.FREE: (80, 180, 100),
    Mark.STRANDED: (220, 60, 50),
    Mark.OFF: (190, 190, 190),
}

# A 5x7 font: each glyph is 7 rows of 5 bits, most significant bit on the left. Lower case prints as upper case.
_FONT_ROWS = {
    "A": ".###.|#...#|#...#|#####|#...#|#...#|#...#",
    "B": "####.|#...#|#...#|####.|#...#|#...#|####.",
    "C": ".###.|#...#|#....|#....|#....|#...#|.###.",
    "D": "###..|#..#.|#...#|#...#|#...#|#..#.|###..",
    "E": "#####|#....|#....|####.|#....|#....|#####",
    "F": "#####|#....|#....|####.|#....|#....|#....",
    "G": ".###.|#...#|#....|#.###|#...#|#...#|.####",
    "H": "#...#|#...#|#...#|#####|#...#|#...#|#...#",
    "I": ".###.|..#..|..#..|..#..|..#..|..#..|.###.",
    "J": "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
    "K": "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#",
    "L": "#....|#....|#....|#....|#....|#....|#####",
    "M": "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#",
    "N": "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
    "O": ".###.|#...#|#...#|#...#|#...#|#...#|.###.",
    "P": "####.|#...#|#...#|####.|#....|#....|#....",
    "Q": ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#",
    "R": "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
    "S": ".####|#....|#....|.###.|....#|....#|####.",
    "T": "#####|..#..|..#..|..#..|..#..|..#..|..#..",
    "U": "#...#|#...#|#...#|#...#|#...#|#...#|.###.",
    "V": "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
    "W": "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.",
    "X": "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
    "Y": "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..",
    "Z": "#####|....#|...#.|..#..|.#...|#....|#####",
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
    "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
    "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
    "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
    "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
    "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    " ": ".....|.....|.....|.....|.....|.....|.....",
    "-": ".....|.....|.....|.###.|.....|.....|.....",
    ".": ".....|.....|.....|.....|.....|.##..|.##..",
    "_": ".....|.....|.....|.....|.....|.....|#####",
    ":": ".....|.##..|.##..|.....|.##..|.##..|.....",
    "/": ".....|....#|...#.|..#..|.#...|#....|.....",
    "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.",
    ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...",
    "%": "##...|##..#|...#.|..#..|.#...|#..##|...##",
    ",": ".....|.....|.....|.....|.##..|..#..|.#...",
    "=": ".....|.....|#####|.....|#####|.....|.....",
    "+": ".....|..#..|..#..|#####|..#..|..#..|.....",
    "?": ".###.|#...#|....#|...#.|..#..|.....|..#..",
    ";": ".....|.##..|.##..|.....|.##..|..#..|.#...",
    "'": "..#..|..#..|.#...|.....|.....|.....|.....",
    "[": ".###.|.#...|.#...|.#...|.#...|.#...|.###.",
    "]": ".###.|...#.|...#.|...#.|...#.|...#.|.###.",
    "@": ".###.|#...#|#.###|#.#.#|#.###|#....|.###.",
    "#": ".#.#.|.#.#.|#####|.#.#.|#####|.#.#.|.#.#.",
    "*": ".....|..#..|#.#.#|.###.|#.#.#|..#..|.....",
}
FONT: dict[str, tuple[int, ...]] = {
    char: tuple(int(row.replace("#", "1").replace(".", "0"), 2) for row in rows.split("|"))
    for char, rows in _FONT_ROWS.items()
}
GLYPH_W, GLYPH_H, ADVANCE = 5, 7, 6


class Canvas:
    """An RGB image in a bytearray, with rectangles and 5x7 text."""

    def __init__(self, width: int, height: int, background: Color = BACKGROUND) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def rect(self, x: int, y: int, w: int, h: int, color: Color) -> None:
        x0, y0, x1, y1 = max(0, x), max(0, y), min(self.width, x + w), min(self.height, y + h)
        if x1 <= x0 or y1 <= y0:
            return
        row = bytes(color) * (x1 - x0)
        for yy in range(y0, y1):
            start = (yy * self.width + x0) * 3
            self.pixels[start : start + len(row)] = row

    def text(self, x: int, y: int, text: str, color: Color = INK, scale: int = 1) -> int:
        """Draw ``text`` with its top-left corner at (x, y); returns the x after it."""
        for char in text:
            glyph = FONT.get(char.upper(), FONT["?"])
            for r, bits in enumerate(glyph):
                for c in range(GLYPH_W):
                    if bits >> (GLYPH_W - 1 - c) & 1:
                        self.rect(x + c * scale, y + r * scale, scale, scale, color)
            x += ADVANCE * scale
        return x

    def png(self) -> bytes:
        return encode_png(self.width, self.height, bytes(self.pixels))


def text_width(text: str, scale: int = 1) -> int:
    return len(text) * ADVANCE * scale


def encode_png(width: int, height: int, rgb: bytes) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (rows top to bottom, 3 bytes a pixel), every row with filter 0."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


# Geometry of the map, in pixels.
MARGIN = 12
CELL_W, CELL_H, EDGE = 9, 16, 2
GPU_GAP = 8
LINE = 11
CARD_GAP = 10
NODES_PER_COLUMN = 40
COLUMN_GAP = 24


def _gpu_width(gpu: GpuState) -> int:
    return gpu.model.memory_slices * CELL_W


def _card_size(node: NodeLine) -> tuple[int, int]:
    gpus = sum(_gpu_width(g.gpu) + GPU_GAP for g in node.gpus)
    return max(gpus, text_width(_card_title(node)), 200), LINE + CELL_H + 5 + LINE + CARD_GAP


def _card_title(node: NodeLine) -> str:
    s = node.summary
    parts = [s.name]
    for group in s.models:
        parts.append(
            f"{len(group.gpus)}x {group.model.name} used {group.used}/{group.capacity} stranded {group.stranded} "
            f"fits {_name(group.largest)}"
        )
    return "  ".join(parts)


def _draw_gpu(canvas: Canvas, x: int, y: int, line: GpuLine) -> None:
    marks = slice_marks(line.gpu)
    for i, (mark, region) in enumerate(marks):
        left = 0 if i == 0 or marks[i - 1] == (mark, region) else EDGE
        canvas.rect(x + i * CELL_W + left, y, CELL_W - left, CELL_H, COLORS[mark])
    counts = line.counts
    if counts.stranded:
        # Stranded compute slices need not show as stranded memory (two 3g instances strand the 7th compute
        # slice and no memory slice): a red bar under the GPU, its length their share of the GPU's compute.
        canvas.rect(
            x, y + CELL_H + 1, _gpu_width(line.gpu) * counts.stranded // counts.capacity, 2, COLORS[Mark.STRANDED]
        )
    label = counts.largest.name.split(".")[0] if counts.largest is not None else "-"
    canvas.text(x, y + CELL_H + 5, f"{line.gpu.index}:{label}", GREY_INK)


def _legend(canvas: Canvas | None, x: int, y: int) -> int:
    """Draw the legend (or only measure it with ``canvas=None``); returns its width."""
    start = x
    for mark, label in (
        (Mark.USED, "used"),
        (Mark.FREE, "free"),
        (Mark.STRANDED, "stranded"),
        (Mark.OFF, "MIG disabled, idle"),
    ):
        if canvas is not None:
            canvas.rect(x, y, CELL_W * 2, LINE - 2, COLORS[mark])
            canvas.text(x + CELL_W * 2 + 4, y + 1, label)
        x += CELL_W * 2 + 4 + text_width(label) + 14
    note = (
        "one cell per memory slice, a gap at each instance edge; under each GPU: a red bar for stranded compute "
        "slices, its index and the largest profile that still fits"
    )
    if canvas is not None:
        canvas.text(x, y + 1, note, GREY_INK)
    return x + text_width(note) - start


def render_png(report: FleetReport, max_nodes: int | None = None) -> bytes:
    shown = list(report.nodes[:max_nodes] if max_nodes is not None else report.nodes)
    _, ratio, free = fragmentation_ratio((n.summary for n in report.nodes), report.weights)
    title = (
        f"mig-extender report: {len(report.nodes)} GPU nodes, {report.gpu_count} GPUs, {free} free compute slices, "
        f"fragmentation ratio {ratio:.2f} ({report.source})"
    )
    if len(shown) < len(report.nodes):
        title += f" - first {len(shown)} nodes shown"
    columns = [shown[i : i + NODES_PER_COLUMN] for i in range(0, len(shown), NODES_PER_COLUMN)] or [[]]
    sizes = [[_card_size(n) for n in column] for column in columns]
    widths = [max((w for w, _ in column), default=0) for column in sizes]
    top = MARGIN + 2 * LINE + 2 * LINE + 6
    body_h = max(sum(h for _, h in column) for column in sizes)
    width = MARGIN * 2 + max(sum(widths) + COLUMN_GAP * (len(widths) - 1), text_width(title, 2), _legend(None, 0, 0))
    canvas = Canvas(width, top + body_h + MARGIN)
    canvas.text(MARGIN, MARGIN, title, INK, scale=2)
    _legend(canvas, MARGIN, MARGIN + 2 * LINE + 6)
    x = MARGIN
    for column, column_sizes, column_width in zip(columns, sizes, widths):
        y = top
        for node, (_, h) in zip(column, column_sizes):
            canvas.text(x, y, _card_title(node))
            gx = x
            for line in node.gpus:
                _draw_gpu(canvas, gx, y + LINE, line)
                gx += _gpu_width(line.gpu) + GPU_GAP
            y += h
        x += column_width + COLUMN_GAP
    return canvas.png()


# --- loading the fleet ------------------------------------------------------------------------------------


def _view_for(settings: Settings) -> ClusterView:
    return ClusterView(config_ref=settings.mig_parted)


async def list_cluster(view: ClusterView, kubeconfig: str | None) -> None:
    """One list of Nodes, Pods and the mig-parted ConfigMap into ``view`` (no watch)."""
    api = await make_api_client(kubeconfig)
    try:
        for reflector in reflectors(view, api, timeout_s=60, read_timeout_s=60.0):
            await reflector.list()
    finally:
        await api.close()


def load_view(settings: Settings) -> tuple[ClusterView, str]:
    """The view from ``settings.snapshot``, else from a live cluster (kubeconfig or service account).

    Raises ``SnapshotError`` or ``extender.kube.errors.ConfigError`` with a message for a person.
    """
    view = _view_for(settings)
    source = settings.view
    if source.snapshot:
        load_snapshot(view, source.snapshot)
        return view, f"snapshot {source.snapshot}"
    asyncio.run(list_cluster(view, source.kubeconfig))
    where = f"kubeconfig {source.kubeconfig}" if source.kubeconfig else "in-cluster service account"
    return view, f"cluster via {where}"
