"""Generate the Grafana dashboard of mig-extender with grafana-foundation-sdk (Grafana's own typed builders).

    python scripts/gen_dashboard.py            # write manifests/grafana/mig-extender-dashboard.json and its ConfigMap
    python scripts/gen_dashboard.py --check    # exit 1 if the committed files differ from what this code generates

Every panel query uses only series that the extender always exports (per-GPU series are opt-in and absent
here); tests/prometheus/ evaluates each of them against a real Prometheus scraping the demo snapshot.
Template variables: ``datasource`` (a Prometheus data source) and ``model`` (GPU models, multi-select).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import bargauge, common, dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "manifests" / "grafana"
DASHBOARD_JSON = OUT_DIR / "mig-extender-dashboard.json"
CONFIGMAP_YAML = OUT_DIR / "mig-extender-dashboard-configmap.yaml"
UID = "mig-extender"
JOB = 'job="mig-extender"'  # the ServiceMonitor's job label: the Service's name
MODEL = 'model=~"$model"'
DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")


def query(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_models.Threshold(value=v, color=c) for v, c in steps])
    )


def stat_panel(
    title: str, description: str, expr: str, unit: str = "short", *, steps: list[tuple[float | None, str]]
) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, instant=True))
        .unit(unit)
        .height(4)
        .span(4)
        .no_value("0")
        .color_mode(common_models.BigValueColorMode.BACKGROUND)
        .graph_mode(common_models.BigValueGraphMode.AREA)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(thresholds(*steps))
    )


def series_panel(
    title: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    unit: str = "short",
    *,
    span: int = 12,
    stacked: bool = False,
    bars: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .unit(unit)
        .height(8)
        .span(span)
        .fill_opacity(20 if stacked else 5)
        .legend(
            common.VizLegendOptions()
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.RIGHT)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
    )
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
    if bars:
        panel = panel.draw_style(common_models.GraphDrawStyle.BARS)
    return panel


def fleet_row(builder: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        builder.with_row(dashboard.Row("Fleet"))
        .with_panel(
            stat_panel(
                "Fragmentation ratio",
                "Cluster F / free compute slices (mig_extender_cluster_fragmentation_ratio): 0 when every free slice "
                "is usable by the demand mix, 1 when none is.",
                "max(mig_extender_cluster_fragmentation_ratio)",
                "percentunit",
                steps=[(None, "green"), (0.3, "yellow"), (0.5, "red")],
            )
        )
        .with_panel(
            stat_panel(
                "Free compute slices",
                "Free compute slices of the selected models, stranded ones included.",
                f'sum(max by (model) (mig_extender_compute_slices{{state="free", {MODEL}}}))',
                steps=[(None, "blue")],
            )
        )
        .with_panel(
            stat_panel(
                "Stranded compute slices",
                "Free compute slices that no instance of any base profile can use until a re-layout.",
                f'sum(max by (model) (mig_extender_compute_slices{{state="stranded", {MODEL}}}))',
                steps=[(None, "green"), (1, "yellow"), (16, "red")],
            )
        )
        .with_panel(
            stat_panel(
                "Pending MIG instances",
                "MIG instances requested by pending pods (all verdicts).",
                "sum(max by (profile, verdict) (mig_extender_pending_demand_instances))",
                steps=[(None, "green"), (1, "yellow")],
            )
        )
        .with_panel(
            stat_panel(
                "GPU nodes",
                "GPU nodes in the extender's view.",
                "sum(max by (source, fidelity, mode) (mig_extender_nodes))",
                steps=[(None, "blue")],
            )
        )
        .with_panel(
            stat_panel(
                "Extenders up",
                "Extender replicas Prometheus scrapes successfully.",
                f"sum(up{{{JOB}}})",
                steps=[(None, "red"), (1, "green")],
            )
        )
    )


def fragmentation_row(builder: dashboard.Dashboard) -> dashboard.Dashboard:
    largest = (
        heatmap.Panel()
        .title("Largest fitting profile per node")
        .description(
            "Compute slices of the largest base profile that still fits somewhere on each node (0: none), over "
            "time: one row per node. Dark rows are nodes that only small instances still fit on."
        )
        .datasource(DATASOURCE)
        .with_target(query(f"max by (node) (mig_extender_node_largest_fitting_profile_slices{{{MODEL}}})", "{{node}}"))
        .height(10)
        .span(12)
        .calculate(False)
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("RdYlGn")
            .scale(heatmap_models.HeatmapColorScale.LINEAR)
            .min(0)
            .max(7)
            .steps(8)
            .fill("dark-green")
            .exponent(0.5)
            .reverse(False)
        )
        .cell_values(heatmap.CellValues().unit("short"))
        .show_value(common_models.VisibilityMode.AUTO)
        .cell_gap(1)
        .filter_values(heatmap.FilterValueRange().le(-1))  # the default hides 0s: nodes where nothing fits
        .show_legend()
    )
    by_largest = (
        bargauge.Panel()
        .title("Nodes by largest fitting profile")
        .description("How many nodes can still take an instance of each size (compute slices; 0: nothing fits).")
        .datasource(DATASOURCE)
        .with_target(
            query(
                f"sum by (slices) (max by (model, slices) (mig_extender_nodes_by_largest_fitting_profile{{{MODEL}}}))",
                "{{slices}}g",
                instant=True,
            )
        )
        .height(10)
        .span(6)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    most_fragmented = (
        table.Panel()
        .title("Most fragmented nodes")
        .description("The 15 nodes with the highest F (compute slices the demand mix could not use).")
        .datasource(DATASOURCE)
        .with_target(
            query(
                f"topk(15, max by (node, model) (mig_extender_node_fragmentation{{{MODEL}}}))",
                "{{node}}",
                instant=True,
            ).format(prometheus_models.PromQueryFormat.TABLE)
        )
        .height(10)
        .span(6)
        .unit("short")
        .decimals(1)
    )
    return (
        builder.with_row(dashboard.Row("Fragmentation"))
        .with_panel(
            series_panel(
                "Fleet fragmentation over time",
                "Cluster fragmentation ratio, and per model: F / free compute slices.",
                [
                    query("max(mig_extender_cluster_fragmentation_ratio)", "cluster"),
                    query(
                        f"sum by (model) (max by (model) (mig_extender_fragmentation{{{MODEL}}})) / "
                        f'sum by (model) (max by (model) (mig_extender_compute_slices{{state="free", {MODEL}}}))',
                        "{{model}}",
                    ),
                ],
                "percentunit",
            )
        )
        .with_panel(
            series_panel(
                "Compute slices by state and model",
                "Used and free compute slices per model; stranded ones are part of free.",
                [
                    query(
                        f"sum by (model, state) (max by (model, state) (mig_extender_compute_slices{{{MODEL}}}))",
                        "{{model}} {{state}}",
                    )
                ],
            )
        )
        .with_panel(
            series_panel(
                "Free instances by profile and model",
                "Free MIG instances per profile (static GPUs), plus on dynamic GPUs how many more instances of that "
                "profile alone they could get.",
                [
                    query(
                        f"sum by (model, profile) (max by (model, profile) (mig_extender_free_instances{{{MODEL}}}))",
                        "{{model}} {{profile}}",
                    )
                ],
                span=12,
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Stranded compute slices, top nodes",
                "Nodes with the most free compute slices that no base profile can use.",
                [
                    query(
                        "topk(10, max by (node, model) "
                        f'(mig_extender_node_compute_slices{{state="stranded", {MODEL}}}))',
                        "{{node}}",
                    )
                ],
            )
        )
        .with_panel(largest)
        .with_panel(by_largest)
        .with_panel(most_fragmented)
    )


def demand_row(builder: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        builder.with_row(dashboard.Row("Demand and verdicts"))
        .with_panel(
            series_panel(
                "Pending MIG demand by profile and verdict",
                "Instances requested by pending MIG pods: relayout (idle GPUs could be re-partitioned for them) or "
                "no-layout-fits (new capacity needed).",
                [
                    query(
                        "sum by (profile, verdict) (max by (profile, verdict) (mig_extender_pending_demand_instances))",
                        "{{profile}} {{verdict}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Filter outcomes by verdict",
                "Nodes per second that /filter passed or rejected, by kube-scheduler result code and fit verdict.",
                [
                    query(
                        "sum by (outcome, verdict) (rate(mig_extender_filter_node_outcomes_total[$__rate_interval]))",
                        "{{outcome}} {{verdict}}",
                    )
                ],
                "ops",
            )
        )
        .with_panel(
            series_panel(
                "Demand mix",
                "The share of recent MIG requests per profile shape that F and the scores weigh (decayed counts "
                "blended with the prior).",
                [query("max by (shape) (mig_extender_demand_share)", "{{shape}}")],
                "percentunit",
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Verdict annotations and events",
                "Pod annotation patches and Events per second, by result.",
                [
                    query(
                        "sum by (result) (rate(mig_extender_annotation_patches_total[$__rate_interval]))",
                        "patch {{result}}",
                    ),
                    query(
                        "sum by (reason, result) (rate(mig_extender_events_total[$__rate_interval]))",
                        "event {{reason}} {{result}}",
                    ),
                ],
                "ops",
            )
        )
    )


def extender_row(builder: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        builder.with_row(dashboard.Row("Extender"))
        .with_panel(
            series_panel(
                "Latency by verb",
                "p50 and p99 time to answer kube-scheduler (its httpTimeout is 5 s).",
                [
                    query(
                        "histogram_quantile(0.99, sum by (le, verb) "
                        "(rate(mig_extender_request_duration_seconds_bucket[$__rate_interval])))",
                        "p99 {{verb}}",
                    ),
                    query(
                        "histogram_quantile(0.5, sum by (le, verb) "
                        "(rate(mig_extender_request_duration_seconds_bucket[$__rate_interval])))",
                        "p50 {{verb}}",
                    ),
                ],
                "s",
                span=8,
            )
        )
        .with_panel(
            series_panel(
                "Requests by verb",
                "Calls per second from kube-scheduler.",
                [
                    query(
                        "sum by (verb) (rate(mig_extender_request_duration_seconds_count[$__rate_interval]))",
                        "{{verb}}",
                    )
                ],
                "reqps",
                span=8,
            )
        )
        .with_panel(
            series_panel(
                "Errors by verb and status",
                "Rejected requests per second: 400 and 413 are malformed calls, internal are extender bugs.",
                [
                    query(
                        "sum by (verb, status) (rate(mig_extender_bad_requests_total[$__rate_interval]))",
                        "{{verb}} {{status}}",
                    )
                ],
                "reqps",
                span=8,
            )
        )
        .with_panel(
            series_panel(
                "Candidate nodes per call",
                "p99 of the nodes kube-scheduler sends per call.",
                [
                    query(
                        "histogram_quantile(0.99, sum by (le, verb) "
                        "(rate(mig_extender_nodes_per_request_bucket[$__rate_interval])))",
                        "{{verb}}",
                    )
                ],
            )
        )
        .with_panel(
            series_panel(
                "Fleet metrics cost per scrape",
                "Time a scrape of /metrics spends computing the fleet series.",
                [query("max by (instance) (mig_extender_fleet_collect_seconds)", "{{instance}}")],
                "s",
            )
        )
    )


def view_row(builder: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        builder.with_row(dashboard.Row("View health"))
        .with_panel(
            series_panel(
                "View staleness",
                "Seconds since each watch stream was last heard from (lists, events, bookmarks); readiness fails "
                "past stale_after_s (180 s by default).",
                [query("max by (kind) (mig_extender_view_staleness_seconds)", "{{kind}}")],
                "s",
                span=8,
            )
        )
        .with_panel(
            series_panel(
                "Watch restarts and re-lists",
                "Watch streams restarted (by kind and reason) and full re-lists, per second.",
                [
                    query(
                        "sum by (kind, reason) (rate(mig_extender_watch_restarts_total[$__rate_interval]))",
                        "restart {{kind}} {{reason}}",
                    ),
                    query("sum by (kind) (rate(mig_extender_relists_total[$__rate_interval]))", "relist {{kind}}"),
                ],
                "ops",
                span=8,
            )
        )
        .with_panel(
            series_panel(
                "Objects in the view",
                "Nodes and pods the extender holds.",
                [query("max by (kind) (mig_extender_view_objects)", "{{kind}}")],
                span=8,
            )
        )
        .with_panel(
            series_panel(
                "Nodes by layout source and fidelity",
                "Where each GPU node's layout comes from: node-annotation (exact), mig-parted-config "
                "(derived-layout) or allocatable (derived-counts).",
                [query("max by (source, fidelity, mode) (mig_extender_nodes)", "{{source}} {{fidelity}} {{mode}}")],
                stacked=True,
            )
        )
        .with_panel(
            series_panel(
                "Invalid input",
                "Invalid node annotations and mig-parted configs, malformed objects, and nodes read with warnings.",
                [
                    query("max(mig_extender_node_annotation_invalid_total)", "invalid node annotations"),
                    query("max(mig_extender_mig_parted_config_invalid_total)", "invalid mig-parted configs"),
                    query("max(mig_extender_objects_invalid_total)", "malformed objects"),
                    query("max(mig_extender_nodes_with_warnings)", "nodes with warnings"),
                ],
            )
        )
    )


def build() -> dashboard_models.Dashboard:
    builder = (
        dashboard.Dashboard("mig-extender: MIG fragmentation and scheduling")
        .uid(UID)
        .description("Fragmentation of the MIG fleet, pending MIG demand and the extender's health (mig-extender).")
        .tags(["mig-extender", "gpu", "mig", "kube-scheduler"])
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("model")
            .label("GPU model")
            .datasource(DATASOURCE)
            .query("label_values(mig_extender_compute_slices, model)")
            .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    for row in (fleet_row, fragmentation_row, demand_row, extender_row, view_row):
        builder = row(builder)
    built = builder.build()
    # Stable panel ids and one refId per target (A, B...), as Grafana itself would assign them on save.
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
        for index, target in enumerate(getattr(panel, "targets", None) or []):
            target.ref_id = chr(ord("A") + index)
    return built


def dashboard_json() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build()) + "\n"


def configmap_yaml(text: str) -> str:
    header = (
        "# Generated by scripts/gen_dashboard.py: the Grafana dashboard for the Grafana sidecar\n"
        '# (kube-prometheus-stack loads ConfigMaps labelled grafana_dashboard: "1"). Edit the script, not this file.\n'
    )
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "mig-extender-dashboard",
            "namespace": "mig-extender",
            "labels": {
                "grafana_dashboard": "1",
                "app.kubernetes.io/name": "mig-extender",
                "app.kubernetes.io/part-of": "mig-extender",
            },
        },
        "data": {DASHBOARD_JSON.name: text},
    }

    class Literal(yaml.SafeDumper):
        pass

    def block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Literal.add_representer(str, block)
    return header + yaml.dump(document, Dumper=Literal, sort_keys=False, width=1000)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def outputs() -> dict[Path, str]:
    text = dashboard_json()
    json.loads(text)  # fail here, not in Grafana, if the encoder ever writes something else
    return {DASHBOARD_JSON: text, CONFIGMAP_YAML: configmap_yaml(text)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed files are stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(_shown(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {_shown(path)}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python scripts/gen_dashboard.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
