"""``mig-extender report``: the fleet's GPUs and MIG slices as a map, in the terminal and as a PNG.

Per node and per GPU, a row of memory slices marked used, free or stranded, with instance boundaries, the
compute-slice counts and the largest profile that still fits. The counts are the model's slice accounting
(:mod:`extender.model.accounting`), the metrics' own, so the map and ``/metrics`` always agree. The PNG is drawn with
matplotlib (extra ``sim``), one cell per compute slice coloured as the counts count it.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .kube.client import make_api_client
from .model.accounting import ModelSlices, NodeSlices, SliceCounts, fleet_totals, node_slices, slice_counts, source_of
from .model.catalog import Profile
from .model.placement import free_starts
from .model.state import GpuState
from .plotting import pyplot
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
    unknown_products: Mapping[str, int] = field(default_factory=dict)
    """Nodes per GPU product the catalog does not know: not evaluated, left to kube-scheduler's counts."""

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
    unknown = view.counters.unknown_product_nodes()  # complete now: every node state was just built
    return FleetReport(source, tuple(lines), dict(weights), unknown)


def _name(profile: Profile | None) -> str:
    return profile.name if profile is not None else "none"


def render_text(report: FleetReport, max_nodes: int | None = None) -> str:
    shown = report.nodes[:max_nodes] if max_nodes is not None else report.nodes
    totals = fleet_totals(n.summary for n in report.nodes)
    total_f, ratio, free = totals.fragmentation(report.weights), totals.fragmentation_ratio(report.weights), totals.free
    out = [
        f"mig-extender report: {len(report.nodes)} GPU nodes, {report.gpu_count} GPUs ({report.source})",
        LEGEND,
        f"fleet: {free} free compute slices, F {total_f:.1f}, fragmentation ratio {ratio:.2f} "
        f"(mix {', '.join(f'{k}={v:.2f}' for k, v in sorted(report.weights.items()))})",
    ]
    if report.unknown_products:
        listed = ", ".join(f"{product} ({count} nodes)" for product, count in sorted(report.unknown_products.items()))
        out.append(f"not evaluated, left to kube-scheduler (GPU product not in the catalog): {listed}")
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
# One row per node, one bar per GPU, one cell per compute slice: the cells are the counts printed beside the
# row (blue cells = used, green + red = free, red = stranded), so colours and numbers cannot disagree. The
# layout is computed in pixels here (plain data, testable); matplotlib only draws it.

Color = tuple[int, int, int]
BACKGROUND: Color = (255, 255, 255)
INK: Color = (33, 33, 33)
GREY_INK: Color = (110, 110, 110)
BAND: Color = (243, 244, 247)
COLORS: dict[Mark, Color] = {
    Mark.USED: (66, 110, 200),
    Mark.FREE: (80, 180, 100),
    Mark.STRANDED: (220, 60, 50),
    Mark.OFF: (190, 190, 190),
}
CELL_MARKS = (Mark.USED, Mark.FREE, Mark.STRANDED)
"""The marks a compute-slice cell can have: a MIG-disabled GPU is used or free as a whole."""

# Geometry, in pixels at DPI. Text is monospace so its width is known without a renderer.
DPI = 100
FONT_FAMILY = "DejaVu Sans Mono"  # ships with matplotlib
MARGIN = 14
CELL_W, CELL_H = 12, 14
SLICE_GAP, GROUP_GAP = 1, 4
"""Between two compute slices of one instance (or run), and between two instances."""
GPU_GAP = 10
ROW_H = CELL_H + 22
COLUMN_GAP = 30
ROWS_PER_COLUMN = 60
NAME_CHARS = 40
"""Longer node names are shortened in the middle (Kubernetes allows 253 characters)."""
TITLE_PT, NAME_PT, BODY_PT, SMALL_PT = 12.0, 9.0, 8.0, 7.0


def char_width(points: float) -> int:
    """Advance of one monospace character in pixels: DejaVu Sans Mono's is 0.602 em, hinted to whole pixels."""
    return round(0.602 * points * DPI / 72)


def text_width(text: str, points: float) -> int:
    return len(text) * char_width(points)


@dataclass(frozen=True, slots=True)
class Cell:
    """One compute slice (or a legend swatch, ``node == ""``), its top-left corner and size."""

    x: int
    y: int
    w: int
    h: int
    mark: Mark
    node: str = ""
    gpu: int = -1


@dataclass(frozen=True, slots=True)
class Label:
    """Text, left-aligned, vertically centred on ``y``."""

    x: float
    y: float
    text: str
    points: float
    color: Color = INK
    bold: bool = False


@dataclass(frozen=True, slots=True)
class Drawing:
    width: int
    height: int
    cells: tuple[Cell, ...]
    labels: tuple[Label, ...]
    bands: tuple[tuple[int, int, int, int], ...] = ()
    """Light stripes (x, y, w, h) behind every other row, to follow a row across."""


def compute_groups(line: GpuLine) -> tuple[tuple[Mark, int], ...]:
    """A GPU's compute slices as (mark, slices) groups: used instances, free instances, then the stranded ones.

    The group sizes add up to the counts (used, free minus stranded, stranded); where the instances do not
    (a MIG-disabled GPU, a dynamic GPU's free room) one group stands for the count.
    """
    counts, gpu = line.counts, line.gpu
    used = [i.profile.compute_slices for i in gpu.instances if i.used]
    if sum(used) != counts.used:
        used = [counts.used]
    usable = counts.free - counts.stranded
    free = [] if gpu.dynamic else [i.profile.compute_slices for i in gpu.instances if not i.used]
    if sum(free) != usable:
        free = [usable]
    groups = [(Mark.USED, n) for n in used] + [(Mark.FREE, n) for n in free] + [(Mark.STRANDED, counts.stranded)]
    return tuple((mark, n) for mark, n in groups if n > 0)


def _bar_width(line: GpuLine) -> int:
    groups = compute_groups(line)
    slices = sum(n for _, n in groups)
    return slices * CELL_W + (slices - len(groups)) * SLICE_GAP + max(0, len(groups) - 1) * GROUP_GAP


def _gpu_label(line: GpuLine) -> str:
    if not line.gpu.mig_enabled:
        return f"{line.gpu.index} MIG off"
    return f"{line.gpu.index} {_name(line.counts.largest)}"


def _short(name: str) -> str:
    if len(name) <= NAME_CHARS:
        return name
    half = (NAME_CHARS - 1) // 2
    return name[:half] + "…" + name[-(NAME_CHARS - 1 - half) :]


def _node_subtitle(node: NodeLine) -> str:
    s = node.summary
    models = ", ".join(f"{len(g.gpus)}x {g.model.name}" for g in s.models)
    return f"{models}  {s.mode}  {source_of(s.fidelity)}"


def _count_segments(group: ModelSlices, weights: Mapping[str, float]) -> tuple[tuple[str, Color], ...]:
    """The counts beside a row, each in the colour of the cells it counts."""
    return (
        (f"used {group.used}/{group.capacity}", COLORS[Mark.USED]),
        (f"free {group.free}", COLORS[Mark.FREE]),
        (f"stranded {group.stranded}", COLORS[Mark.STRANDED]),
        (f"fits {_name(group.largest)}  F {group.fragmentation(weights):.1f}", INK),
    )


SEGMENT_GAP = "  "


def _counts_text(node: NodeLine, weights: Mapping[str, float]) -> list[str]:
    return [SEGMENT_GAP.join(text for text, _ in _count_segments(g, weights)) for g in node.summary.models]


def _row_height(node: NodeLine) -> int:
    return max(ROW_H, len(node.summary.models) * 14 + 8)


def _legend(x: int, y: int) -> tuple[list[Cell], list[Label]]:
    cells, labels = [], []
    for mark, text in (
        (Mark.USED, "used"),
        (Mark.FREE, "free"),
        (Mark.STRANDED, "stranded: free, but no instance can use it"),
    ):
        cells.append(Cell(x, y - CELL_H // 2, CELL_W * 2, CELL_H, mark))
        labels.append(Label(x + CELL_W * 2 + 5, y, text, BODY_PT))
        x += CELL_W * 2 + 5 + text_width(text, BODY_PT) + 18
    note = (
        "one cell per compute slice, a gap between instances; under each GPU: its index and the largest profile "
        "that fits"
    )
    labels.append(Label(x, y, note, BODY_PT, GREY_INK))
    return cells, labels


def layout_png(report: FleetReport, max_nodes: int | None = None) -> Drawing:
    """Where every cell and label of the map goes: nodes in rows, wrapped into columns of up to ROWS_PER_COLUMN."""
    shown = list(report.nodes[:max_nodes] if max_nodes is not None else report.nodes)
    totals = fleet_totals(n.summary for n in report.nodes)
    ratio, free = totals.fragmentation_ratio(report.weights), totals.free
    title = (
        f"mig-extender report: {len(report.nodes)} GPU nodes, {report.gpu_count} GPUs, {free} free compute slices, "
        f"fragmentation ratio {ratio:.2f}"
    )
    subtitle = f"{report.source}; mix " + ", ".join(f"{k}={v:.2f}" for k, v in sorted(report.weights.items()))
    if len(shown) < len(report.nodes):
        subtitle += f"; the first {len(shown)} nodes by name are drawn (--png-max-nodes)"
    cells, legend_labels = _legend(MARGIN, MARGIN + 52)
    labels = [
        Label(MARGIN, MARGIN + 9, title, TITLE_PT, bold=True),
        Label(MARGIN, MARGIN + 30, subtitle, BODY_PT, GREY_INK),
        *legend_labels,
    ]
    top = MARGIN + 52 + CELL_H + 12
    column_count = max(1, -(-len(shown) // ROWS_PER_COLUMN))
    per_column = max(1, -(-len(shown) // column_count))
    columns = [shown[i : i + per_column] for i in range(0, len(shown), per_column)]
    x, bottom = MARGIN, top
    bands = []
    for column in columns:
        name_w = max(
            max(text_width(_short(n.summary.name), NAME_PT), text_width(_node_subtitle(n), SMALL_PT)) for n in column
        )
        # A GPU's slot is a whole number of label characters wide, so a row's GPU labels are one padded text.
        slot_chars = max(
            max(-(-(_bar_width(g) + GPU_GAP) // char_width(SMALL_PT)), len(_gpu_label(g)) + 1)
            for n in column
            for g in n.gpus
        )
        slot_w = slot_chars * char_width(SMALL_PT)
        gpus_w = max(len(n.gpus) for n in column) * slot_w
        counts_w = max(text_width(t, BODY_PT) for n in column for t in _counts_text(n, report.weights))
        column_w = name_w + 12 + gpus_w + 4 + counts_w
        y = top
        for row_number, node in enumerate(column):
            if row_number % 2:
                bands.append((x - 4, y - 5, column_w + 8, _row_height(node)))
            labels.append(Label(x, y + 5, _short(node.summary.name), NAME_PT, bold=True))
            labels.append(Label(x, y + 19, _node_subtitle(node), SMALL_PT, GREY_INK))
            gx = x + name_w + 12
            for line in node.gpus:
                cx = gx
                for mark, slices in compute_groups(line):
                    for _ in range(slices):
                        cells.append(Cell(cx, y, CELL_W, CELL_H, mark, node.summary.name, line.gpu.index))
                        cx += CELL_W + SLICE_GAP
                    cx += GROUP_GAP - SLICE_GAP
                gx += slot_w
            gpu_labels = "".join(_gpu_label(line).ljust(slot_chars) for line in node.gpus).rstrip()
            labels.append(Label(x + name_w + 12, y + CELL_H + 7, gpu_labels, SMALL_PT, GREY_INK))
            cx = x + name_w + 12 + gpus_w + 4
            for row, group in enumerate(node.summary.models):
                sx = cx
                for text, color in _count_segments(group, report.weights):
                    labels.append(Label(sx, y + 5 + row * 14, text, BODY_PT, color))
                    sx += text_width(text + SEGMENT_GAP, BODY_PT)
            y += _row_height(node)
        bottom = max(bottom, y)
        x += column_w + COLUMN_GAP
    width = max(
        x - COLUMN_GAP + MARGIN, *(int(label.x) + text_width(label.text, label.points) + MARGIN for label in labels)
    )
    return Drawing(width, bottom + MARGIN, tuple(cells), tuple(labels), tuple(bands))


def _hex(color: Color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def render_png(report: FleetReport, max_nodes: int | None = None) -> bytes:
    """The map as PNG bytes; raises :class:`~extender.plotting.MatplotlibMissing` without the ``sim`` extra."""
    plt = pyplot()
    collections: Any = importlib.import_module("matplotlib.collections")
    patches: Any = importlib.import_module("matplotlib.patches")
    drawing = layout_png(report, max_nodes)
    fig = plt.figure(figsize=(drawing.width / DPI, drawing.height / DPI), dpi=DPI, facecolor=_hex(BACKGROUND))
    try:
        # One axes over the whole figure in pixel units, y downwards: a Cell's numbers are its pixels.
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, drawing.width)
        ax.set_ylim(drawing.height, 0)
        ax.set_axis_off()
        for bx, by, bw, bh in drawing.bands:
            ax.add_patch(patches.Rectangle((bx, by), bw, bh, facecolor=_hex(BAND), edgecolor="none", linewidth=0))
        boxes = [[(c.x, c.y), (c.x + c.w, c.y), (c.x + c.w, c.y + c.h), (c.x, c.y + c.h)] for c in drawing.cells]
        ax.add_collection(
            collections.PolyCollection(
                boxes,
                facecolors=[_hex(COLORS[c.mark]) for c in drawing.cells],
                edgecolors="none",
                linewidths=0,
                antialiaseds=False,  # flat colours: a cell's pixels are exactly its mark's colour
            )
        )
        for label in drawing.labels:
            ax.text(
                label.x,
                label.y,
                label.text,
                fontsize=label.points,
                family=FONT_FAMILY,
                color=_hex(label.color),
                fontweight="bold" if label.bold else "normal",
                ha="left",
                va="center",
            )
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buffer.getvalue()


# --- loading the fleet ------------------------------------------------------------------------------------


def _view_for(settings: Settings) -> ClusterView:
    return ClusterView(config_ref=settings.mig_parted)


async def list_cluster(view: ClusterView, kubeconfig: str | None) -> None:
    """One list of every kind the view holds into ``view`` (no watch); DRA kinds the cluster lacks are none."""
    api = await make_api_client(kubeconfig)
    try:
        for reflector in reflectors(view, api, timeout_s=60, read_timeout_s=60.0):
            await reflector.list_once()
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
