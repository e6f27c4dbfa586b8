"""scripts/check_trace.py: a download of the Alibaba GPU trace checked before the simulator reads it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check_trace.py"
# A downloaded copy of the trace, where there is one: $ALIBABA_GPU_TRACE, or the workspace's beside the repo.
REAL = Path(os.environ.get("ALIBABA_GPU_TRACE") or REPO.parent / "shared" / "data" / "alibaba-gpu-v2023")

NODE_HEADER = ["sn", "cpu_milli", "memory_mib", "gpu", "model"]
POD_HEADER = [
    "name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos", "pod_phase",
    "creation_time", "deletion_time", "scheduled_time",
]  # fmt: skip


def write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def generated(folder: Path, nodes: int = 1213, pods: int = 8152) -> Path:
    """A made-up trace with the released files' names, columns and row counts."""
    folder.mkdir()
    write(
        folder / "openb_node_list_gpu_node.csv", NODE_HEADER, [[f"n{i}", 96000, 786432, 8, "G2"] for i in range(nodes)]
    )
    rows: list[list[object]] = [
        [f"p{i}", 4000, 15258, 1, 220, "", "BE", "Running", 100 + i, 500 + i, 100 + i] for i in range(pods)
    ]
    write(folder / "openb_pod_list_default.csv", POD_HEADER, rows)
    return folder


def check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_complete_trace_passes(tmp_path: Path) -> None:
    done = check(generated(tmp_path / "csv"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "ok: openb_pod_list_default.csv: 8,152 rows as released" in done.stdout


def test_a_missing_file_says_where_to_get_it(tmp_path: Path) -> None:
    folder = generated(tmp_path / "csv")
    (folder / "openb_node_list_gpu_node.csv").unlink()
    done = check(folder)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"check_trace: {folder}/openb_node_list_gpu_node.csv: missing; download it from "
        "https://github.com/alibaba/clusterdata/tree/master/cluster-trace-gpu-v2023/csv"
    ]


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("cut", "openb_pod_list_default.csv: 8,000 rows where the upstream release has 8,152"),
        ("column", "openb_pod_list_default.csv: no column gpu_milli (header: name,cpu_milli"),
        ("value", "openb_pod_list_default.csv:12: gpu_milli 'half' is not thousandths of a GPU, 0 to 1000"),
        ("lfs", "openb_pod_list_default.csv: a Git LFS pointer, not the data"),
    ],
)
def test_each_problem_is_one_line(damage: str, says: str, tmp_path: Path) -> None:
    folder = generated(tmp_path / "csv", pods=8000 if damage == "cut" else 8152)
    pods = folder / "openb_pod_list_default.csv"
    lines = pods.read_text().splitlines()
    if damage == "column":
        index = POD_HEADER.index("gpu_milli")
        rows = [row.split(",") for row in lines[1:]]
        write(pods, POD_HEADER[:index] + POD_HEADER[index + 1 :], [row[:index] + row[index + 1 :] for row in rows])
    elif damage == "value":
        lines[11] = lines[11].replace(",220,", ",half,")
        pods.write_text("\n".join(lines) + "\n")
    elif damage == "lfs":
        pods.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 575468\n")
    done = check(folder)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"check_trace: {folder}/")
    assert says in line


def test_not_a_folder_is_a_usage_error(tmp_path: Path) -> None:
    done = check(tmp_path / "nowhere")
    assert done.returncode == 2
    assert "is not a folder; download the csv/ folder of https://github.com/alibaba/clusterdata" in done.stderr


@pytest.mark.skipif(not REAL.is_dir(), reason="no copy of the trace on this machine")
def test_the_real_trace_is_as_released() -> None:
    done = check(REAL)
    assert done.returncode == 0, done.stderr
    assert "ok: openb_node_list_gpu_node.csv: 1,213 rows as released" in done.stdout
