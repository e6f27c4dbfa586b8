#!/usr/bin/env python3
"""Check a download of the Alibaba GPU trace before ``mig-extender simulate`` reads it.

    python scripts/check_trace.py DIR

DIR is the ``csv/`` folder of ``cluster-trace-gpu-v2023`` in https://github.com/alibaba/clusterdata (the
trace of the USENIX ATC'23 paper "Beware of Fragmentation", FGD). The simulator reads the GPU node list and
the default pod list; the multigpu20 variant is checked when present. Each file is checked for its columns,
its row count (that of the upstream release: the README there gives 8,152 tasks for the default pod list and
describes the GPU node list as the GPU nodes of its 1,523) and the values the simulator parses. One line per
problem on stderr; exit 0 when every file is as released, 1 when not, 2 for a DIR that is no folder.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

UPSTREAM = "https://github.com/alibaba/clusterdata/tree/master/cluster-trace-gpu-v2023/csv"
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
TIMED_POD_COLUMNS = (*POD_COLUMNS, "gpu_spec", "qos", "pod_phase", "creation_time", "deletion_time", "scheduled_time")


def whole(text: str) -> bool:
    return text.isdigit()


def milli(text: str) -> bool:
    return text.isdigit() and int(text) <= 1000


def seconds_or_empty(text: str) -> bool:
    if not text:
        return True
    try:
        return float(text) >= 0
    except ValueError:
        return False


@dataclass(frozen=True)
class TraceFile:
    name: str
    columns: tuple[str, ...]
    rows: int
    values: dict[str, tuple[Callable[[str], bool], str]]
    """column -> (is the value one the simulator reads, what it should be)"""
    required: bool = True


FILES = (
    TraceFile(
        "openb_node_list_gpu_node.csv",
        ("sn", "cpu_milli", "memory_mib", "gpu", "model"),
        1213,
        {"gpu": (whole, "a whole number of GPUs")},
    ),
    TraceFile(
        "openb_pod_list_default.csv",
        TIMED_POD_COLUMNS,
        8152,
        {
            "num_gpu": (whole, "a whole number of GPUs"),
            "gpu_milli": (milli, "thousandths of a GPU, 0 to 1000"),
            "creation_time": (seconds_or_empty, "seconds or empty"),
            "deletion_time": (seconds_or_empty, "seconds or empty"),
        },
    ),
    TraceFile(
        "openb_pod_list_multigpu20.csv",
        POD_COLUMNS,
        8324,
        {"num_gpu": (whole, "a whole number of GPUs"), "gpu_milli": (milli, "thousandths of a GPU, 0 to 1000")},
        required=False,
    ),
)


def check_file(path: Path, spec: TraceFile) -> Iterator[str]:
    """The problems of one file, one line each."""
    with path.open(newline="") as handle:
        first = handle.readline()
        if first.startswith("version https://git-lfs"):
            yield f"{path}: a Git LFS pointer, not the data: fetch the file itself (git lfs pull, or {UPSTREAM})"
            return
        handle.seek(0)
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in spec.columns if c not in header]
        if missing:
            yield f"{path}: no column {', '.join(missing)} (header: {','.join(header) or 'empty'})"
        rows = 0
        bad: dict[str, tuple[int, str, int]] = {}  # column -> (first row, its value, how many rows)
        for line, row in enumerate(reader, start=2):
            rows += 1
            for column, (valid, _) in spec.values.items():
                if column in header and not valid((row.get(column) or "").strip()):
                    first_line, value, count = bad.get(column, (line, row.get(column) or "", 0))
                    bad[column] = (first_line, value, count + 1)
    for column, (line, value, count) in bad.items():
        others = f" (and {count - 1} more rows)" if count > 1 else ""
        yield f"{path}:{line}: {column} {value!r} is not {spec.values[column][1]}{others}"
    if rows != spec.rows:
        yield f"{path}: {rows:,} rows where the upstream release has {spec.rows:,}: a cut download or another version"


def check(directory: Path) -> tuple[list[str], list[str]]:
    """(problems, files found as released) of a trace folder."""
    problems: list[str] = []
    good: list[str] = []
    for spec in FILES:
        path = directory / spec.name
        if not path.is_file():
            if spec.required:
                problems.append(f"{path}: missing; download it from {UPSTREAM}")
            continue
        try:
            found = list(check_file(path, spec))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            found = [f"{path}: cannot be read as CSV: {exc}"]
        problems += found
        if not found:
            good.append(f"{spec.name}: {spec.rows:,} rows as released")
    return problems, good


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python scripts/check_trace.py DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    if not directory.is_dir():
        print(f"check_trace: {directory} is not a folder; download the csv/ folder of {UPSTREAM}", file=sys.stderr)
        return 2
    problems, good = check(directory)
    for line in good:
        print(f"ok: {line}")
    for line in problems:
        print(f"check_trace: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
