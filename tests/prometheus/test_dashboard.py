"""The generated dashboard and the shipped rules, checked without Prometheus (no marker: these run everywhere)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.prometheus.promql import DASHBOARD, ROOT, alert_rules, dashboard, operands, panel_queries

GENERATOR = ROOT / "scripts" / "gen_dashboard.py"
CONFIGMAP = ROOT / "manifests" / "grafana" / "mig-extender-dashboard-configmap.yaml"


def test_generated_dashboard_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_fails_on_a_stale_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("gen_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    stale = tmp_path / "dashboard.json"
    stale.write_text("{}\n")
    monkeypatch.setattr(module, "DASHBOARD_JSON", stale)
    assert module.main(["--check"]) == 1
    assert f"stale: {stale}" in capsys.readouterr().err
    assert stale.read_text() == "{}\n"  # --check writes nothing


def test_the_configmap_carries_the_dashboard_for_the_sidecar() -> None:
    (configmap,) = [d for d in yaml.safe_load_all(CONFIGMAP.read_text()) if d]
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"]["mig-extender-dashboard.json"] == DASHBOARD.read_text()


def test_every_panel_has_queries_with_unique_ref_ids_and_the_issue_s_panels_exist() -> None:
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    for wanted in (
        "Fleet fragmentation over time",
        "Free instances by profile and model",
        "Largest fitting profile per node",
        "Pending MIG demand by profile and verdict",
        "Latency by verb",
        "Errors by verb and status",
        "View staleness",
    ):
        assert wanted in titles
    assert any(p["type"] == "heatmap" for p in panels)
    for panel in panels:
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(set(ref_ids)) == len(ref_ids) and all(ref_ids), panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(set(ids)) == len(ids)
    assert len(panel_queries()) >= 25


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('up{job="x"} == 0', ['up{job="x"}']),
        ('absent(up{job="x"} == 1)', ['up{job="x"}']),
        ('a{x!="1", y=~"a|b"} != 2', ['a{x!="1", y=~"a|b"}']),
        ("max(r) > 0.5 and on () sum(p) > 0", ["max(r)", "sum(p)"]),
        ("a > bool 1 or on(x) group_left(y) b unless c", ["a", "b", "c"]),
        # "and" inside a name or a function is no operator; nor are comparisons inside parentheses
        ("sum(mig_extender_demand_share > 0) by (shape)", ["sum(mig_extender_demand_share > 0) by (shape)"]),
        ("rate(x[5m]) >= 1e-3", ["rate(x[5m])"]),
    ],
)
def test_operands(expr: str, expected: list[str]) -> None:
    assert operands(expr) == expected


def test_every_alert_has_a_comparison_to_strip_or_an_absent() -> None:
    for rule in alert_rules():
        assert operands(rule["expr"]) != [rule["expr"].strip()], rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
