"""What ``simulate`` prints and draws: the columns of its mode, a legend of them, lines that can be told apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from extender.cli import main
from extender.simulate.engine import PolicyResult
from extender.simulate.run import _groups, _mean_waits, _node_hours_over_time

CHURN = ["simulate", "--synthetic", "inference", "--synthetic-nodes", "2", "--synthetic-pods", "150", "--mode", "churn"]
FILL = ["simulate", "--synthetic", "inference", "--synthetic-nodes", "2", "--synthetic-pods", "300", "--no-bound"]


def test_churn_table_has_churn_columns_and_a_legend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*CHURN, "--policies", "spread,mig-extender"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "policy", "placed", "waiting", "relayouts", "added", "removed", "node-h", "gpu-h", "wait-s", "p95-s", "secs"
    ]  # fmt: skip
    assert not any("alloc" in line for line in lines[:3])  # fill's columns, always 0 after the last departure
    legend = "\n".join(lines[4:])
    for column in lines[0].split()[1:]:
        assert column in legend, column


def test_fill_table_explains_its_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*FILL, "--policies", "pack"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "policy", "alloc", "unalloc", "placed", "failed", "1st-fail", "relayouts", "stranded", "secs"
    ]  # fmt: skip
    assert "1st-fail  arrived demand / cluster slices at the first" in out
    assert "bound " not in out  # --no-bound: no legend line for what is not shown


def test_policies_drawn_on_top_of_each_other_are_one_line() -> None:
    a, b, c = PolicyResult("random"), PolicyResult("fgd"), PolicyResult("pack")
    a.curve = b.curve = [(0.5, 0.5)]
    c.curve = [(0.5, 0.4)]
    assert [[r.policy for r in g] for g in _groups([a, b, c], lambda r: tuple(r.curve))] == [
        ["random", "fgd"],
        ["pack"],
    ]


def test_node_hours_and_waits_over_time() -> None:
    result = PolicyResult("pack", node_counts=[(0.0, 2), (3600.0, 4), (7200.0, 4)])
    assert _node_hours_over_time(result.node_counts) == ([0.0, 1.0, 2.0], [0.0, 2.0, 6.0])
    result.waits = [(10.0, 30.0), (20.0, 10.0), (7000.0, 5.0)]
    middles, waits = _mean_waits(result, [0.0, 3600.0, 7200.0])
    assert middles == [0.5, 1.5] and waits == [20.0, 5.0]


@pytest.mark.parametrize("mode", [CHURN, FILL])
def test_plots_are_written(mode: list[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "plot.png"
    assert main([*mode, "--policies", "spread,pack", "--plot", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
