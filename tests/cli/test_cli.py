"""The command line: profile and layout listings, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extender.cli import main


def test_profiles_prints_lgipp_placements(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--gpu", "NVIDIA-H200"]) == 0
    out = capsys.readouterr().out
    assert "3g.71gb          id  9  3g 4m  max 2  {0,4}:4" in out
    assert "1g.35gb          id 15  1g 2m  max 4  {0,2,4,6}:2" in out


def test_layouts_counts_the_19(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layouts", "--gpu", "A100-40GB", "--profiles", "1g.5gb,2g.10gb,3g.20gb,4g.20gb,7g.40gb"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20 and lines[-1].startswith("# 19 maximal layouts of A100-40GB")
    assert "4g.20gb@0 3g.20gb@4" in lines


def test_unknown_gpu_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["profiles", "--gpu", "T4"])
    assert exit_info.value.code == 2
    assert "unknown GPU model 'T4'" in capsys.readouterr().err


def test_misspelled_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layouts", "--gpu", "A100-40GB", "--profiles", "1g.5gb,3g.2gb"]) == 2
    assert "no MIG profile '3g.2gb' (did you mean 3g.20gb" in capsys.readouterr().err


@pytest.mark.parametrize(
    "world_and_mode",
    [["--world", "static"], ["--world", "dynamic-ideal", "--mode", "churn"]],
)
def test_work_conserving_bound_outside_dynamic_fill_is_refused(
    world_and_mode: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["simulate", "--synthetic", "uniform", "--synthetic-nodes", "1", "--work-conserving-bound", *world_and_mode]
    assert main(args) == 2
    assert "--work-conserving-bound needs --mode fill and a dynamic world" in capsys.readouterr().err


def test_unknown_scoring_strategy_for_the_simulator_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--synthetic", "uniform", "--synthetic-nodes", "1", "--scoring", "best"]) == 2
    assert "unknown scoring strategy 'best'; known: fragmentation, fragmentation-spread" in capsys.readouterr().err


def test_simulator_records_ours_scoring_strategy(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    args = ["simulate", "--synthetic", "uniform", "--synthetic-nodes", "1", "--synthetic-pods", "50"]
    args += ["--policies", "mig-extender", "--no-bound", "--scoring", "fragmentation-spread", "--json", str(out)]
    assert main(args) == 0
    document = json.loads(out.read_text())
    assert document["run"]["scoring"] == "fragmentation-spread"
    assert list(document["policies"]) == ["mig-extender"]
