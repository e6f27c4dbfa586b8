"""Deployment artifacts: manifests, generated scheduler configs, the node annotation schema and examples.

Pure checks, no cluster; a server-side dry-run against a real kube-apiserver belongs to the end-to-end tests.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from extender.model import catalog
from extender.model.catalog import model_named as catalog_model
from extender.model.migparted import parse_config

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
GENERATOR = ROOT / "scripts" / "gen_manifests.py"
SCHEMA = ROOT / "extender" / "schemas" / "node-gpus-v1.json"
NODE_EXAMPLES = sorted((ROOT / "examples" / "node-gpus").glob("*.json"))
EXTENDER_MODE_CONFIG = MANIFESTS / "extender-mode" / "kube-scheduler-config.yaml"
EXTENDER_MODE_DRA_CONFIG = EXTENDER_MODE_CONFIG.with_name("kube-scheduler-config-dra.yaml")
SCHEDULER_CONFIG_FILES = (EXTENDER_MODE_CONFIG, EXTENDER_MODE_DRA_CONFIG)
SECONDARY_CONFIG = MANIFESTS / "secondary-scheduler" / "scheduler-config.yaml"

# An extended resource name as kube-scheduler's config validation wants it: domain-prefixed, and the name part
# a qualified name (at most 63 characters, alphanumeric at both ends).
EXTENDED_RESOURCE = re.compile(r"^[a-z0-9.-]+/[A-Za-z0-9][-A-Za-z0-9_.]*$")
PROFILE_NAME = re.compile(r"^[1-7]g\.[0-9]+gb([+-][a-z]+(\.[a-z]+)*)*$")

Doc = dict[str, Any]


# --- helpers -------------------------------------------------------------------------------------------------


HELM_CHARTS = MANIFESTS / "helm"
"""Helm charts: templates, not YAML; tests/helm renders and checks them."""


def yaml_files() -> list[Path]:
    return sorted(
        p for p in MANIFESTS.rglob("*") if p.suffix in (".yaml", ".yml") and not p.is_relative_to(HELM_CHARTS)
    )


def load_docs(path: Path) -> list[Doc]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"
    return docs


def objects(kind: str) -> Iterator[tuple[Path, Doc]]:
    for path in yaml_files():
        for doc in load_docs(path):
            if doc.get("kind") == kind:
                yield path, doc


def scheduler_configs() -> dict[str, Doc]:
    """The two KubeSchedulerConfigurations: the file for the control plane and the one in the ConfigMap."""
    (extender_mode,) = load_docs(EXTENDER_MODE_CONFIG)
    (extender_mode_dra,) = load_docs(EXTENDER_MODE_DRA_CONFIG)
    (configmap,) = load_docs(SECONDARY_CONFIG)
    secondary = yaml.safe_load(configmap["data"]["config.yaml"])
    assert isinstance(secondary, dict)
    return {"extender-mode": extender_mode, "extender-mode-dra": extender_mode_dra, "secondary-scheduler": secondary}


def catalog_resource_names() -> list[str]:
    return catalog.mig_resource_names()


def load_generator(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """scripts/gen_manifests.py as a module (registered while the test runs: dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location("gen_manifests", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def deployment(name: str) -> Doc:
    found = [doc for _, doc in objects("Deployment") if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one Deployment {name}, found {len(found)}"
    return found[0]


def node_gpus_errors(doc: Any) -> list[str]:
    """The rules of extender/schemas/node-gpus-v1.json plus unique indexes, checked by hand.

    Used so that the examples are checked even where ``jsonschema`` is not installed.
    """
    errors: list[str] = []
    if not isinstance(doc, dict):
        return ["$ must be an object"]
    if set(doc) - {"version", "gpus"}:
        errors.append(f"$: unknown keys {sorted(set(doc) - {'version', 'gpus'})}")
    if doc.get("version") != "v1":
        errors.append("$.version must be 'v1'")
    gpus = doc.get("gpus")
    if not isinstance(gpus, list) or len(gpus) > 64:
        return [*errors, "$.gpus must be an array of at most 64 GPUs"]
    seen: set[int] = set()
    for g, gpu in enumerate(gpus):
        at = f"$.gpus[{g}]"
        if not isinstance(gpu, dict):
            errors.append(f"{at} must be an object")
            continue
        if set(gpu) - {"index", "product", "migEnabled", "mode", "instances"}:
            errors.append(f"{at}: unknown keys")
        index = gpu.get("index")
        if type(index) is not int or not 0 <= index <= 63 or index in seen:
            errors.append(f"{at}.index must be a unique integer 0..63")
        else:
            seen.add(index)
        if not isinstance(gpu.get("product"), str) or not gpu["product"]:
            errors.append(f"{at}.product must be a non-empty string")
        if type(gpu.get("migEnabled", True)) is not bool:
            errors.append(f"{at}.migEnabled must be a boolean")
        mode = gpu.get("mode", "static")
        if mode not in ("static", "dynamic"):
            errors.append(f"{at}.mode must be static or dynamic")
        instances = gpu.get("instances", [])
        if not isinstance(instances, list) or len(instances) > 8:
            errors.append(f"{at}.instances must be an array of at most 8")
            continue
        if gpu.get("migEnabled") is False and instances:
            errors.append(f"{at}: MIG disabled but instances listed")
        for i, instance in enumerate(instances):
            where = f"{at}.instances[{i}]"
            if not isinstance(instance, dict):
                errors.append(f"{where} must be an object")
                continue
            if set(instance) - {"profile", "start", "size", "used"}:
                errors.append(f"{where}: unknown keys")
            if not isinstance(instance.get("profile"), str) or not PROFILE_NAME.match(instance["profile"]):
                errors.append(f"{where}.profile must be a MIG profile name")
            start = instance.get("start")
            if type(start) is not int or not 0 <= start <= 7:
                errors.append(f"{where}.start must be an integer 0..7")
            size = instance.get("size", 1)
            if type(size) is not int or not 1 <= size <= 8:
                errors.append(f"{where}.size must be an integer 1..8")
            used = instance.get("used", False)
            if type(used) is not bool:
                errors.append(f"{where}.used must be a boolean")
            elif mode == "dynamic" and "used" in instance and not used:
                errors.append(f"{where}.used must be true in dynamic mode")
    return errors


def one_gpu(**fields: Any) -> Doc:
    """A v1 annotation with one H100-80GB GPU, its fields overridden by ``fields``."""
    return {"version": "v1", "gpus": [{"index": 0, "product": "H100-80GB", **fields}]}


def one_instance(**fields: Any) -> Doc:
    return one_gpu(instances=[{"profile": "1g.10gb", "start": 0, **fields}])


INVALID_NODE_GPUS: list[Any] = [
    {"version": "v2", "gpus": []},
    {"version": "v1"},
    {"version": "v1", "gpus": [], "extra": 1},
    {"version": "v1", "gpus": [{"index": 0}]},
    one_gpu(index=64),
    one_gpu(index="0"),
    one_gpu(mode="auto"),
    one_gpu(migEnabled="yes"),
    one_gpu(instances=[{"profile": "3g.40gb"}]),
    one_instance(profile="3g"),
    one_instance(start=8),
    one_instance(size=0),
    one_instance(Used=True),
    one_gpu(migEnabled=False, instances=[{"profile": "1g.10gb", "start": 0}]),
    one_gpu(mode="dynamic", instances=[{"profile": "1g.10gb", "start": 0, "used": False}]),
]


# --- every manifest ------------------------------------------------------------------------------------------


def test_every_manifest_yaml_parses() -> None:
    paths = yaml_files()
    assert len(paths) >= 15
    for path in paths:
        docs = load_docs(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str), path
            if doc["kind"] == "ConfigMap":
                for key, value in doc.get("data", {}).items():
                    if key.endswith((".yaml", ".yml")):
                        assert isinstance(yaml.safe_load(value), dict), f"{path}: data.{key}"


def test_kustomizations_reference_existing_files_and_not_the_control_plane_config() -> None:
    kustomizations = sorted(MANIFESTS.rglob("kustomization.yaml"))
    assert {p.parent.name for p in kustomizations} >= {"common", "base", "extender-mode", "secondary-scheduler"}
    for path in kustomizations:
        (doc,) = load_docs(path)
        # manifests/karpenter and headroom are Components: added to an install with `components:`, not built alone.
        assert doc["kind"] == ("Component" if path.parent.name in ("karpenter", "headroom") else "Kustomization")
        assert "namespace" not in doc, f"{path}: a namespace override would move the Role in gpu-operator"
        for resource in doc["resources"]:
            target = (path.parent / resource).resolve()
            assert target.exists(), f"{path}: {resource} does not exist"
            assert target not in {p.resolve() for p in SCHEDULER_CONFIG_FILES}, "scheduler configs are no resource"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{path}: {resource} is not a kustomization"


def test_namespaced_objects_name_their_namespace() -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    namespaced = {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "PodDisruptionBudget", "ConfigMap"}
    for path in yaml_files():
        if path.name == "kustomization.yaml" or path in SCHEDULER_CONFIG_FILES or path.parent.name == "examples":
            continue
        for doc in load_docs(path):
            namespace = doc["metadata"].get("namespace")
            if doc["kind"] in cluster_scoped:
                assert namespace is None, f"{path}: {doc['kind']} is cluster-scoped"
            elif doc["kind"] in namespaced:
                assert namespace in ("mig-extender", "gpu-operator", "kube-system"), f"{path}: {doc['kind']}"


# --- generated scheduler configurations ---------------------------------------------------------------------


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generator_check_names_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = load_generator(monkeypatch)
    assert generator.main([], root=tmp_path) == 0
    assert generator.main(["--check"], root=tmp_path) == 0
    stale = tmp_path / "manifests" / "extender-mode" / "kube-scheduler-config.yaml"
    stale.write_text(stale.read_text().replace("weight: 10", "weight: 1"))
    capsys.readouterr()
    assert generator.main(["--check"], root=tmp_path) == 1
    err = capsys.readouterr().err
    assert "stale: manifests/extender-mode/kube-scheduler-config.yaml" in err
    assert "secondary-scheduler" not in err.split("stale:", 1)[1]
    assert "weight: 1\n" in stale.read_text(), "--check must not write"


@pytest.mark.parametrize("mode", ["extender-mode", "extender-mode-dra", "secondary-scheduler"])
def test_scheduler_config_extender_settings(mode: str) -> None:
    config = scheduler_configs()[mode]
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    (extender,) = config["extenders"]
    assert extender["filterVerb"] == "filter"
    assert extender["prioritizeVerb"] == "prioritize"
    assert extender["weight"] == 10
    assert extender["nodeCacheCapable"] is True
    assert extender["ignorable"] is False
    assert extender["httpTimeout"] == "5s"
    # the extender binds: it counts each pod on the node kube-scheduler chose, before the Binding exists
    assert extender["bindVerb"] == "bind"
    assert "preemptVerb" not in extender
    (profile,) = config["profiles"]
    assert profile["percentageOfNodesToScore"] == 100


def test_configs_that_must_see_claim_pods_have_no_managed_resources() -> None:
    # kube-scheduler skips an extender with managedResources for a pod whose devices come only through
    # ResourceClaims (resources.claims is no managed resource): these configurations must send every pod.
    for mode in ("extender-mode-dra", "secondary-scheduler"):
        (extender,) = scheduler_configs()[mode]["extenders"]
        assert "managedResources" not in extender, mode
    dra, plain = scheduler_configs()["extender-mode-dra"], scheduler_configs()["extender-mode"]
    assert {**dra, "extenders": None} == {**plain, "extenders": None}


def test_managed_resources_are_every_catalog_mig_resource() -> None:
    (extender,) = scheduler_configs()["extender-mode"]["extenders"]
    managed = extender["managedResources"]
    names = [item["name"] for item in managed]
    assert names == catalog_resource_names()
    assert len(names) == len(set(names)) >= 72
    for item in managed:
        assert item == {"name": item["name"], "ignoredByScheduler": False}
        name = item["name"]
        assert EXTENDED_RESOURCE.match(name), name
        domain, _, local = name.partition("/")
        assert len(local) <= 63 and local[-1].isalnum(), name
        assert domain == "nvidia.com" and not domain.endswith("kubernetes.io"), name


def test_extender_mode_config_targets_the_service_and_default_scheduler() -> None:
    config = scheduler_configs()["extender-mode"]
    assert config["extenders"][0]["urlPrefix"] == "http://mig-extender.mig-extender.svc:8888"
    assert config["profiles"][0]["schedulerName"] == "default-scheduler"
    assert config["clientConnection"]["kubeconfig"] == "/etc/kubernetes/scheduler.conf"
    (service,) = [doc for _, doc in objects("Service") if doc["metadata"]["name"] == "mig-extender"]
    assert service["metadata"]["namespace"] == "mig-extender"
    assert service["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in service["spec"]["ports"]] == [8888]


def test_secondary_scheduler_config_has_its_own_lease_and_loopback_extender() -> None:
    config = scheduler_configs()["secondary-scheduler"]
    election = config["leaderElection"]
    assert election["leaderElect"] is True
    assert election.get("resourceLock", "leases") == "leases"
    assert election["resourceName"] != "kube-scheduler"
    assert election["resourceName"] == "mig-scheduler"
    assert election["resourceNamespace"] == "mig-extender"
    assert config["profiles"][0]["schedulerName"] == "mig-scheduler"
    assert config["extenders"][0]["urlPrefix"] == "http://127.0.0.1:8888"
    assert "kubeconfig" not in config.get("clientConnection", {}), "in-cluster credentials"


# --- Deployments and RBAC -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mig-extender", "mig-scheduler"])
def test_deployment_containers_are_hardened(name: str) -> None:
    spec = deployment(name)["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 10
    pod_security = pod.get("securityContext", {})
    affinity = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert affinity[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    containers = pod["containers"] + pod.get("initContainers", [])
    for container in containers:
        security = {**pod_security, **container.get("securityContext", {})}
        where = f"{name}/{container['name']}"
        assert security.get("runAsNonRoot") is True, where
        assert security.get("runAsUser") == 65532, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], where
        assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert "livenessProbe" in container and "readinessProbe" in container, where
        assert "/tmp" in [m["mountPath"] for m in container.get("volumeMounts", [])], where


def test_extender_deployment_contract() -> None:
    pod = deployment("mig-extender")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "mig-extender:0.1.0"
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "8888"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"name": "MIG_EXTENDER_LOG_FORMAT", "value": "json"} in container["env"]
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    assert pod["serviceAccountName"] == "mig-extender"
    (pdb,) = [doc for _, doc in objects("PodDisruptionBudget") if doc["metadata"]["name"] == "mig-extender"]
    assert pdb["spec"]["minAvailable"] == 1


def test_secondary_scheduler_deployment_mounts_its_config() -> None:
    pod = deployment("mig-scheduler")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"kube-scheduler", "mig-extender"}
    scheduler = containers["kube-scheduler"]
    assert scheduler["image"] == "registry.k8s.io/kube-scheduler:v1.36.3"
    assert "--config=/etc/mig-scheduler/config.yaml" in scheduler["command"]
    mount = next(m for m in scheduler["volumeMounts"] if m["mountPath"] == "/etc/mig-scheduler")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    (configmap,) = load_docs(SECONDARY_CONFIG)
    assert volume["configMap"]["name"] == configmap["metadata"]["name"] == "mig-scheduler-config"
    assert "config.yaml" in configmap["data"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert scheduler[probe]["httpGet"] == {"path": "/healthz", "port": 10259, "scheme": "HTTPS"}
    assert containers["mig-extender"]["args"] == [
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "8888",
        "--metrics-port",
        "8889",
    ]
    assert pod["serviceAccountName"] == "mig-scheduler"


def rbac_subject_roles(subject_name: str) -> set[tuple[str, str, str]]:
    """(binding namespace or '', role kind, role name) of every binding whose subject is the ServiceAccount."""
    found: set[tuple[str, str, str]] = set()
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for _, binding in objects(kind):
            for subject in binding["subjects"]:
                if subject == {"kind": "ServiceAccount", "name": subject_name, "namespace": "mig-extender"}:
                    ref = binding["roleRef"]
                    found.add((binding["metadata"].get("namespace", ""), ref["kind"], ref["name"]))
    return found


def rules_of(kind: str, name: str) -> list[Doc]:
    (role,) = [doc for _, doc in objects(kind) if doc["metadata"]["name"] == name]
    rules: list[Doc] = role["rules"]
    return rules


def test_extender_rbac_is_minimal() -> None:
    assert rbac_subject_roles("mig-extender") == {
        ("", "ClusterRole", "mig-extender"),
        ("gpu-operator", "Role", "mig-extender-mig-parted-config"),
        ("mig-extender", "Role", "mig-extender-leader-election"),
        ("mig-extender", "Role", "mig-extender-provisioning"),  # only with the karpenter Component
        ("", "ClusterRole", "mig-extender-provisioning"),  # list NodeClaims, ditto
        ("mig-extender", "Role", "mig-extender-headroom"),  # only with the headroom Component
    }
    cluster = {
        (rule["apiGroups"][0], resource): set(rule["verbs"])
        for rule in rules_of("ClusterRole", "mig-extender")
        for resource in rule["resources"]
    }
    assert cluster == {
        ("", "nodes"): {"get", "list", "watch", "patch"},  # the re-layout controller: label, taint
        ("", "pods"): {"get", "list", "watch", "patch"},
        ("", "pods/binding"): {"create"},  # the bind verb
        ("", "pods/eviction"): {"create"},  # the defrag controller: evictions the API server checks against PDBs
        ("policy", "poddisruptionbudgets"): {"list"},  # ditto: planned within the budgets
        **{
            ("resource.k8s.io", kind): {"get", "list", "watch"}  # the DRA objects: read only
            for kind in ("resourceslices", "resourceclaims", "resourceclaimtemplates", "deviceclasses")
        },
        ("events.k8s.io", "events"): {"create", "patch"},
        ("", "events"): {"create", "patch"},
    }
    (configmap_rule,) = rules_of("Role", "mig-extender-mig-parted-config")
    assert configmap_rule["resources"] == ["configmaps"]
    assert configmap_rule["resourceNames"] == ["default-mig-parted-config"]
    assert set(configmap_rule["verbs"]) == {"get", "list", "watch", "update"}  # generated configs
    lease_verbs = {v for r in rules_of("Role", "mig-extender-leader-election") for v in r["verbs"]}
    assert lease_verbs == {"get", "create", "update"}
    provisioning = {
        (resource, tuple(rule.get("resourceNames") or ())): set(rule["verbs"])
        for rule in rules_of("Role", "mig-extender-provisioning")
        for resource in rule["resources"]
    }
    assert provisioning == {
        ("pods", ()): {"create", "delete"},  # capacity-request pods, in its own namespace only
        ("pods/status", ()): {"patch"},  # their PodScheduled=False/Unschedulable condition
        ("configmaps", ("mig-extender-pools",)): {"get"},  # the owner of the capacity requests
    }
    assert rules_of("Role", "mig-extender-headroom") == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"]}  # its placeholders, ditto
    ]
    assert rules_of("ClusterRole", "mig-extender-provisioning") == [
        {"apiGroups": ["karpenter.sh"], "resources": ["nodeclaims", "nodepools"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},  # Karpenter's, on waiting MIG pods
    ]


def test_mig_scheduler_rbac_covers_scheduler_and_extender_sidecar() -> None:
    roles = rbac_subject_roles("mig-scheduler")
    assert rbac_subject_roles("mig-extender") <= roles, "the sidecar needs the extender's permissions"
    assert ("", "ClusterRole", "system:kube-scheduler") in roles
    assert ("", "ClusterRole", "system:volume-scheduler") in roles
    assert ("kube-system", "Role", "extension-apiserver-authentication-reader") in roles
    lease_rules = rules_of("ClusterRole", "mig-scheduler-leader-election")
    named = [r for r in lease_rules if r.get("resourceNames")]
    assert named == [{**named[0], "resourceNames": ["mig-scheduler"]}]
    assert {v for r in lease_rules for v in r["verbs"]} == {"get", "update", "create"}


# --- examples -------------------------------------------------------------------------------------------------


def test_example_pod_uses_mig_scheduler_and_a_managed_resource() -> None:
    (pod,) = load_docs(MANIFESTS / "examples" / "pod-mig.yaml")
    assert pod["kind"] == "Pod"
    assert pod["spec"]["schedulerName"] == "mig-scheduler"
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/mig-3g.40gb": 1}
    assert "nvidia.com/mig-3g.40gb" in catalog_resource_names()


def test_example_mig_parted_config_resolves() -> None:
    (configmap,) = load_docs(MANIFESTS / "examples" / "mig-parted-config.yaml")
    assert configmap["metadata"] == {"name": "default-mig-parted-config", "namespace": "gpu-operator"}
    config = parse_config(configmap["data"]["config.yaml"])
    assert set(config.names()) == {"all-disabled", "all-balanced", "all-3g.40gb"}
    for model_name in ("A100-40GB", "H100-80GB"):
        spec = config.resolve("all-balanced", catalog_model(model_name), 0)
        assert spec is not None and spec.mig_enabled
        assert sorted(count for _, count in spec.counts) == [1, 1, 2]
    spec = config.resolve("all-3g.40gb", catalog_model("H100-80GB"), 3)
    assert spec is not None and [(p.name, n) for p, n in spec.counts] == [("3g.40gb", 2)]
    disabled = config.resolve("all-disabled", catalog_model("A100-40GB"), 0)
    assert disabled is not None and not disabled.mig_enabled


def test_node_annotation_examples_follow_the_schema_rules() -> None:
    assert len(NODE_EXAMPLES) == 3
    modes = set()
    for path in NODE_EXAMPLES:
        doc = json.loads(path.read_text())
        assert node_gpus_errors(doc) == [], path
        modes |= {gpu.get("mode", "static") for gpu in doc["gpus"]}
    assert modes == {"static", "dynamic"}


@pytest.mark.parametrize("doc", INVALID_NODE_GPUS)
def test_hand_check_rejects_invalid_annotations(doc: Any) -> None:
    assert node_gpus_errors(doc)


def test_hand_check_rejects_duplicate_gpu_index() -> None:
    gpu = {"index": 0, "product": "NVIDIA-H100-80GB-HBM3"}
    assert node_gpus_errors({"version": "v1", "gpus": [gpu, gpu]})


def test_node_annotation_examples_validate_with_jsonschema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in NODE_EXAMPLES:
        errors = [e.message for e in validator.iter_errors(json.loads(path.read_text()))]
        assert errors == [], path
    for doc in INVALID_NODE_GPUS:
        assert not validator.is_valid(doc), doc


def test_node_annotation_examples_are_accepted_by_the_extender() -> None:
    sources = pytest.importorskip("extender.view.sources")
    for path in NODE_EXAMPLES:
        gpus = sources.parse_gpus_annotation(path.read_text())
        assert len(gpus) == len(json.loads(path.read_text())["gpus"]), path


def test_node_annotation_profiles_in_examples_exist_in_the_catalog() -> None:
    for path in NODE_EXAMPLES:
        for gpu in json.loads(path.read_text())["gpus"]:
            model = catalog_model(gpu["product"])
            for instance in gpu.get("instances", []):
                profile = model.profile(instance["profile"])
                assert instance["start"] in profile.starts, (path, instance)
                assert instance.get("size", profile.memory_slices) == profile.memory_slices, (path, instance)


@pytest.mark.parametrize(("name", "container"), [("mig-extender", "mig-extender"), ("mig-scheduler", "mig-extender")])
def test_relayout_is_off_in_both_deployment_modes_with_a_leader_identity(name: str, container: str) -> None:
    pod = deployment(name)["spec"]["template"]["spec"]
    (extender,) = [c for c in pod["containers"] if c["name"] == container]
    env = {e["name"]: e for e in extender["env"]}
    assert env["MIG_EXTENDER_RELAYOUT"]["value"] == "off"
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_the_headroom_priority_class_is_below_every_workload_and_never_preempts() -> None:
    from extender.settings import HeadroomSettings

    (priority_class,) = [doc for _, doc in objects("PriorityClass")]
    assert priority_class["metadata"]["name"] == HeadroomSettings().priority_class
    assert priority_class["value"] < 0  # pods without a PriorityClass get 0
    assert priority_class["preemptionPolicy"] == "Never"
    assert priority_class["globalDefault"] is False
