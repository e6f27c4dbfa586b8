"""The Helm chart rendered by the real Helm (built from its Go module): lint, the kustomize overlays' objects with
default values, every values combination, the schema and the chart's own checks, and the values documentation.

Against a real API server (server-side dry runs, install, upgrade, uninstall): tests/e2e/test_helm.py.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm import chart
from tests.helm.chart import CHART, Combination, Doc

pytestmark = pytest.mark.helm

OVERLAYS = {"extender": "extender-mode", "secondary-scheduler": "secondary-scheduler"}

PLACEHOLDER_NETWORK = {
    "networkPolicy.enabled": True,
    "networkPolicy.controlPlaneCIDRs": ["192.0.2.0/24"],
    "networkPolicy.apiServerCIDRs": ["198.51.100.0/24"],
}
"""The documentation addresses that manifests/common/networkpolicy.yaml ships (RFC 5737)."""

LEFT_OUT: dict[str, set[str]] = {
    # The chart installs into the release namespace and does not create it (Helm's own --create-namespace does).
    # manifests/common serves both modes; the chart renders only what the chosen mode runs.
    "extender": {"Namespace mig-extender", "NetworkPolicy mig-extender/mig-scheduler"},
    "secondary-scheduler": {
        "Namespace mig-extender",
        "NetworkPolicy mig-extender/mig-extender",
        # the standalone extender's ServiceAccount and its bindings: the sidecar runs as mig-scheduler
        "ServiceAccount mig-extender/mig-extender",
        "ClusterRoleBinding mig-extender",
        "RoleBinding gpu-operator/mig-extender-mig-parted-config",
        "RoleBinding mig-extender/mig-extender-leader-election",
    },
}
"""Objects of the kustomize overlays that the chart leaves out on purpose, per mode."""

OFF_BY_DEFAULT = {"NetworkPolicy mig-extender/mig-extender", "NetworkPolicy mig-extender/mig-scheduler"}
"""The overlays' NetworkPolicies: in the chart networkPolicy is off by default (its addresses have no safe default);
test_network_policy_is_the_kustomize_one_with_the_same_addresses compares them."""


def diff(expected: Doc, got: Doc) -> str:
    lines = difflib.unified_diff(
        yaml.safe_dump(expected).splitlines(keepends=True), yaml.safe_dump(got).splitlines(keepends=True), n=2
    )
    return "".join(lines)


def assert_same_objects(rendered: list[Doc], expected: list[Doc], left_out: set[str]) -> None:
    chart_objects = chart.by_key(rendered)
    kustomize_objects = chart.by_key(expected)
    assert set(chart_objects) == set(kustomize_objects) - left_out, (
        f"only in the chart: {sorted(set(chart_objects) - set(kustomize_objects))}; "
        f"only in kustomize: {sorted(set(kustomize_objects) - left_out - set(chart_objects))}"
    )
    assert left_out <= set(kustomize_objects), "LEFT_OUT names an object the overlay no longer has"
    for name, obj in chart_objects.items():
        assert obj == kustomize_objects[name], (
            f"{name} differs (- kustomize, + chart):\n{diff(kustomize_objects[name], obj)}"
        )


def test_helm_lint_is_clean_in_both_modes() -> None:
    for mode in OVERLAYS:
        result = chart.helm("lint", "--strict", str(CHART), "--set", f"mode={mode}")
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("mode", sorted(OVERLAYS))
def test_default_values_render_the_kustomize_overlay(mode: str) -> None:
    assert_same_objects(
        chart.template({"mode": mode}), chart.kustomize(OVERLAYS[mode]), LEFT_OUT[mode] | OFF_BY_DEFAULT
    )


@pytest.mark.parametrize("mode", sorted(OVERLAYS))
def test_network_policy_is_the_kustomize_one_with_the_same_addresses(mode: str) -> None:
    rendered = [d for d in chart.template({"mode": mode, **PLACEHOLDER_NETWORK}) if d["kind"] == "NetworkPolicy"]
    (policy,) = rendered
    name = policy["metadata"]["name"]
    shipped = [
        d for d in chart.kustomize(OVERLAYS[mode]) if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name
    ]
    assert_same_objects(rendered, shipped, set())


def test_monitoring_objects_are_the_kustomize_ones() -> None:
    values = {"serviceMonitor.enabled": True, "prometheusRule.enabled": True, "dashboard.enabled": True}
    monitoring = {"ServiceMonitor", "PrometheusRule"}
    rendered = [
        d for d in chart.template(values) if d["kind"] in monitoring or d["metadata"]["name"].endswith("-dashboard")
    ]
    assert_same_objects(rendered, chart.kustomize("prometheus") + chart.kustomize("grafana"), set())


def test_provisioning_is_the_karpenter_component(tmp_path: Path) -> None:
    """provisioning.mode=requests with the shipped pools file renders what extender-mode + ../karpenter does."""
    manifests = chart.ROOT / "manifests"
    overlay, component = (os.path.relpath(manifests / name, tmp_path) for name in ("extender-mode", "karpenter"))
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{overlay}]\ncomponents: [{component}]\n"
    )
    expected = chart.kustomize(tmp_path)
    (pools_map,) = [d for d in expected if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mig-extender-pools"]
    pools = yaml.safe_load(pools_map["data"]["pools.yaml"])["pools"]
    rendered = chart.template({"provisioning.mode": "requests", "provisioning.pools": pools})
    # The Component's bindings name both ServiceAccounts; the chart binds the one of its mode.
    for doc in expected:
        if (
            doc["kind"] in ("ClusterRoleBinding", "RoleBinding")
            and doc["metadata"]["name"] == "mig-extender-provisioning"
        ):
            doc["subjects"] = [s for s in doc["subjects"] if s["name"] == "mig-extender"]
    assert_same_objects(rendered, expected, LEFT_OUT["extender"] | OFF_BY_DEFAULT)


def combination_ids() -> list[str]:
    return [c.name for c in chart.combinations()]


@pytest.mark.parametrize("combination", list(chart.combinations()), ids=combination_ids())
def test_every_combination_renders_consistent_objects(combination: Combination) -> None:
    values = combination.values
    docs = chart.template(values)
    kinds = {d["kind"] for d in docs}
    secondary = values.get("mode") == "secondary-scheduler"
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == ({"mig-scheduler"} if secondary else {"mig-extender"})
    (deployment,) = deployments.values()
    pod = deployment["spec"]["template"]["spec"]
    (extender,) = [c for c in pod["containers"] if c["name"] == "mig-extender"]
    env = {e["name"]: e.get("value") for e in extender["env"]}
    assert env["MIG_EXTENDER_RELAYOUT"] == values.get("relayout.mode", "off")
    assert env.get("MIG_EXTENDER_PROVISION", "off") == values.get("provisioning.mode", "off")
    assert ("MIG_EXTENDER_TLS_CERT_FILE" in env) == bool(values.get("tls.enabled"))
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert set(services) == ({"mig-scheduler-metrics"} if secondary else {"mig-extender", "mig-extender-metrics"})
    for service in services.values():
        assert service["metadata"]["labels"]["app.kubernetes.io/name"] == "mig-extender"  # the job label, both modes
    if not secondary:
        # kube-scheduler's Service selects the leader alone; the metrics Service every replica, on the port scraped
        leader_only = values.get("leaderElection.enabled", True)
        assert ("mig-extender.io/leader" in services["mig-extender"]["spec"]["selector"]) == leader_only
        assert (env.get("MIG_EXTENDER_LEADER_ONLY_VERBS") == "true") == leader_only
        assert "mig-extender.io/leader" not in services["mig-extender-metrics"]["spec"]["selector"]
        assert [p["name"] for p in services["mig-extender-metrics"]["spec"]["ports"]] == ["http"]
    else:
        assert "MIG_EXTENDER_LEADER_ONLY_VERBS" not in env  # the sidecar: only its own kube-scheduler calls it
    if secondary:  # the verbs stay on loopback; the Service reaches only the metrics listener
        assert extender["args"][:5] == ["serve", "--host", "127.0.0.1", "--port", "8888"]
        assert extender["args"][5:] == ["--metrics-port", "8889"]
        assert [p["containerPort"] for p in extender["ports"]] == [8889]
        assert extender["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert ("ServiceMonitor" in kinds) == bool(values.get("serviceMonitor.enabled"))
    assert ("PrometheusRule" in kinds) == bool(values.get("prometheusRule.enabled"))
    assert ("NetworkPolicy" in kinds) == bool(values.get("networkPolicy.enabled"))
    replicas = values.get("secondaryScheduler.replicas" if secondary else "extender.replicas", 2)
    assert deployment["spec"]["replicas"] == replicas
    assert ("PodDisruptionBudget" in kinds) == (replicas > 1)
    leases = {
        rule["resourceNames"][0]
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        for rule in d["rules"]
        if rule.get("resources") == ["leases"] and rule.get("resourceNames")
    }
    expected_leases = {"mig-extender"} if values.get("leaderElection.enabled", True) else set()
    if secondary and values.get("secondaryScheduler.leaderElection", True):
        expected_leases.add("mig-scheduler")
    assert leases == expected_leases
    # every volume a container mounts exists, and every ServiceAccount a pod or binding names is rendered
    volumes = {v["name"] for v in pod["volumes"]}
    for container in pod["containers"]:
        assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes, container["name"]
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert pod["serviceAccountName"] in accounts
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        for subject in binding["subjects"]:
            assert subject["name"] in accounts, binding["metadata"]["name"]
    if secondary:
        (config_map,) = [
            d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mig-scheduler-config"
        ]
        config = yaml.safe_load(config_map["data"]["config.yaml"])
        (entry,) = config["extenders"]
        assert entry["urlPrefix"] == ("https" if values.get("tls.enabled") else "http") + "://127.0.0.1:8888"
        assert config["leaderElection"]["leaderElect"] == values.get("secondaryScheduler.leaderElection", True)


@pytest.mark.parametrize(
    ("kube_version", "values", "image"),
    [
        ("v1.36.3", {}, "registry.k8s.io/kube-scheduler:v1.36.3"),
        ("v1.33.7", {}, "registry.k8s.io/kube-scheduler:v1.33.7"),
        ("v1.34.2-eks-3025e55", {}, "registry.k8s.io/kube-scheduler:v1.34.2"),  # a vendor's suffix is dropped
        ("v1.35.1+k3s1", {}, "registry.k8s.io/kube-scheduler:v1.35.1"),
        ("v1.36.3", {"secondaryScheduler.image.tag": "v1.36.0"}, "registry.k8s.io/kube-scheduler:v1.36.0"),
        (
            "v1.36.3",
            {"secondaryScheduler.image.repository": "mirror.example/kube-scheduler"},
            "mirror.example/kube-scheduler:v1.36.3",
        ),
    ],
)
def test_kube_scheduler_image_follows_the_cluster_unless_given(
    kube_version: str, values: dict[str, Any], image: str
) -> None:
    docs = chart.template({"mode": "secondary-scheduler", **values}, kube_version=kube_version)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (scheduler,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "kube-scheduler"]
    assert scheduler["image"] == image


@pytest.mark.parametrize("mode", sorted(OVERLAYS))
def test_own_image_and_settings_reach_the_extender(mode: str) -> None:
    values = {
        "mode": mode,
        "image.repository": "registry.example.com/mig-extender",
        "image.tag": "1.2.3",
        "extender.settings": {
            "scoring": "packing",
            "annotate_rate": 2.5,
            "max_body_bytes": 134217728,
            "access_log": True,
        },
    }
    (deployment,) = [d for d in chart.template(values) if d["kind"] == "Deployment"]
    (extender,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mig-extender"]
    assert extender["image"] == "registry.example.com/mig-extender:1.2.3"
    env = {e["name"]: e.get("value") for e in extender["env"]}
    assert env["MIG_EXTENDER_SCORING"] == "packing"
    assert env["MIG_EXTENDER_ANNOTATE_RATE"] == "2.5"
    assert env["MIG_EXTENDER_MAX_BODY_BYTES"] == "134217728"  # no exponent, which the setting would not read
    assert env["MIG_EXTENDER_ACCESS_LOG"] == "true"


def test_another_release_name_and_namespace_reach_leases_and_roles() -> None:
    out = chart.helm(
        "template",
        "gpu",
        str(CHART),
        "--namespace",
        "sched",
        "--kube-version",
        chart.KUBE_VERSION,
        *chart.set_args({"relayout.mode": "on", "provisioning.mode": "requests", "provisioning.pools": chart.POOLS}),
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (extender,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in extender["env"]}
    assert deployment["metadata"]["name"] == "gpu-mig-extender"
    assert env["MIG_EXTENDER_LEADER_ELECTION_NAMESPACE"] == "sched"
    assert env["MIG_EXTENDER_LEADER_ELECTION_NAME"] == "gpu-mig-extender"
    assert env["MIG_EXTENDER_PROVISION_NAMESPACE"] == "sched"
    assert env["MIG_EXTENDER_PROVISION_OWNER_CONFIGMAP"] == "gpu-mig-extender-pools"
    (lease_role,) = [
        d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "gpu-mig-extender-leader-election"
    ]
    assert lease_role["metadata"]["namespace"] == "sched"
    assert lease_role["rules"][1]["resourceNames"] == ["gpu-mig-extender"]
    (service_monitor_job,) = {
        d["metadata"]["labels"]["app.kubernetes.io/name"] for d in docs if d["kind"] == "Deployment"
    }
    assert service_monitor_job == "mig-extender"  # the job label the alerts and the dashboard select


REFUSED = [
    ({"mode": "primary"}, "mode"),
    ({"replicas": 2}, "replicas"),  # not a value: extender.replicas is
    ({"extender.replicas": 0}, "replicas"),
    ({"extender.settings": {"scoring": "best"}}, "scoring"),
    ({"extender.settings": {"no_such_setting": 1}}, "no_such_setting"),
    ({"extender.settings": {"port": 9000}}, "port"),  # set by the chart: extender.port
    ({"extender.settings": {"relayout": "on"}}, "relayout"),  # set by the chart: relayout.mode
    ({"extender.settings": {"annotate_rate": "fast"}}, "annotate_rate"),
    ({"relayout.mode": "sometimes"}, "relayout"),
    ({"provisioning.pools": [{"nodePool": "p"}]}, "gpu"),
    ({"networkPolicy.apiServerCIDRs": ["10.0.0.1"]}, "apiServerCIDRs"),
    ({"tls": {"enabled": True, "secret": "x"}}, "secret"),
    ({"relayout.mode": "on", "leaderElection.enabled": False}, "leaderElection.enabled=true"),
    ({"leaderElection.enabled": False}, "extender.replicas > 1 needs leaderElection.enabled=true"),
    (
        {"mode": "secondary-scheduler", "secondaryScheduler.leaderElection": False},
        "secondaryScheduler.leaderElection=true",
    ),
    ({"provisioning.mode": "requests"}, "provisioning.pools must list"),
    ({"tls.enabled": True}, "tls.secretName"),
    (
        {"mode": "secondary-scheduler", "tls.enabled": True, "tls.secretName": "s", "tls.clientAuth": True},
        "tls.clientSecretName",
    ),
    ({"networkPolicy.enabled": True}, "networkPolicy.apiServerCIDRs"),
    (
        {"networkPolicy.enabled": True, "networkPolicy.apiServerCIDRs": ["10.0.0.1/32"]},
        "networkPolicy.controlPlaneCIDRs",
    ),
    ({"mode": "secondary-scheduler", "extender.metricsPort": 8888}, "extender.metricsPort must differ"),
]


@pytest.mark.parametrize(("values", "named"), REFUSED, ids=[f"{i}-{n}" for i, (_, n) in enumerate(REFUSED)])
def test_bad_values_are_refused_with_a_message_naming_them(values: dict[str, Any], named: str) -> None:
    result = chart.helm("template", "mig-extender", str(CHART), *chart.set_args(values), check=False)
    assert result.returncode != 0, f"accepted: {values}"
    assert named in result.stderr, result.stderr
    assert "panic" not in result.stderr and "goroutine" not in result.stderr


SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def leaf_paths(values: Any, schema: dict[str, Any] = SCHEMA, path: str = "") -> list[str]:
    """The dotted paths of values.yaml down to the schema's leaves (maps such as labels and resources are one)."""
    if isinstance(values, dict) and "properties" in schema and path != "extender.settings":
        properties = schema["properties"]
        return [
            p
            for name, value in values.items()
            for p in leaf_paths(value, properties.get(name, {}), f"{path}.{name}" if path else name)
        ]
    return [path]


def test_schema_is_strict_and_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or 'values'}: additionalProperties must be false"
            for name, sub in node["properties"].items():
                walk(sub, f"{path}.{name}" if path else name)
        elif path:
            assert node.get("description"), f"{path}: no description"

    walk(schema, "")
    for path in leaf_paths(values):
        node: dict[str, Any] = schema
        for part in path.split("."):
            assert part in node.get("properties", {}), f"{path}: in values.yaml, not in values.schema.json"
            node = node["properties"][part]


def test_chart_readme_documents_every_value_and_setting() -> None:
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [p for p in leaf_paths(values) if p not in documented]
    assert not missing, f"values without a row in {CHART / 'README.md'}: {missing}"
    schema = json.loads((CHART / "values.schema.json").read_text())
    settings = schema["properties"]["extender"]["properties"]["settings"]["properties"]
    from extender.settings import SPECS

    generator = chart.load_generator()
    assert set(settings) | set(generator.CHART_MANAGED) == set(SPECS), "every setting is a value or set by the chart"
    assert not set(settings) & set(generator.CHART_MANAGED)
    assert set(generator.CHART_MANAGED) <= documented  # the table of settings the chart sets itself


def install_commands(text: str) -> list[list[str]]:
    """The ``helm install`` commands of a Markdown text, continuation lines joined, as argument lists."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [shlex.split(line) for line in joined.splitlines() if line.startswith("helm install ")]


@pytest.mark.parametrize("where", ["README.md", "manifests/helm/mig-extender/README.md"])
def test_documented_install_commands_render(where: str) -> None:
    """The documented ``helm install`` commands, rendered (``helm template``, same arguments) instead of installed."""
    commands = install_commands((chart.ROOT / where).read_text())
    assert len(commands) >= 3, commands
    modes = set()
    for command in commands:
        args = [
            str(chart.ROOT / a) if a.startswith("manifests/") else a for a in command[2:] if a != "--create-namespace"
        ]
        docs = [
            d
            for d in yaml.safe_load_all(chart.helm("template", *args, "--kube-version", chart.KUBE_VERSION).stdout)
            if d
        ]
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        modes.add(deployment["metadata"]["name"])
    assert modes == {"mig-extender", "mig-scheduler"}, "both modes are shown"
