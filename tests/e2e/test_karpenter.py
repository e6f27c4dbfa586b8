"""The provisioning loop with a real Karpenter: a pod no layout fits becomes a node of the right NodePool.

Karpenter is sigs.k8s.io/karpenter with its kwok cloud provider (it creates Node objects for the instance
types of scripts/karpenter-harness/instance-types.json) and the KWOK controller as the nodes' kubelet, both
built from Go modules by scripts/build-karpenter.sh, against their own control plane (etcd + kube-apiserver)
and the real kube-scheduler with the shipped extender configuration. The test plays NVIDIA's MIG Manager:
when a node carries ``nvidia.com/mig.config`` and no MIG resources it sets the GFD labels and the MIG
allocatable of that config (the GPU Operator's defaults), as MIG Manager and the device plugin would.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import NAMESPACE, ROOT, ControlPlane, Extender, Kube, default_bin_dir, start_scheduler, wait_for
from tests.e2e.test_manifests_dry_run import KARPENTER_PATHS, manifest_objects
from tests.e2e.test_relayout import MERGE

sys.path.insert(0, str(ROOT / "scripts" / "karpenter-harness"))
from try_karpenter import KARPENTER_BIN_DIR, install_crds, karpenter_env, kwok_command, spawn, stop

from extender.model.catalog import model_named
from extender.model.migparted import default_config_document, parse_config
from extender.model.provisioning import Pool

A100 = "NVIDIA-A100-SXM4-80GB"
H100 = "NVIDIA-H100-80GB-HBM3"
A100_40 = "NVIDIA-A100-SXM4-40GB"
PRODUCTS = {"p4de.24xlarge": A100, "p5.48xlarge": H100, "p4d.24xlarge": A100_40}
"""What GPU Feature Discovery would label the instance types' nodes with."""
POOL = "a100-balanced"
OVERLAY_POOL = "h100-7g"
MIG_REQUEST_POOL = "a100-40gb-1g"
HALF_POOL = "a100-half-3g"
RESEARCH_POOL = "a100-research"
RESEARCH_TAINT = {"key": "dedicated", "value": "research", "effect": "NoSchedule"}
HALF_CONFIG = "half-3g.40gb"
MIG_PARTED = default_config_document()
# Four GPUs of eight in MIG mode (two 3g.40gb each), four whole: a node that still offers nvidia.com/gpu.
MIG_PARTED["mig-configs"][HALF_CONFIG] = [
    {"devices": [0, 1, 2, 3], "mig-enabled": True, "mig-devices": {"3g.40gb": 2}},
    {"devices": [4, 5, 6, 7], "mig-enabled": False},
]
CONFIG = parse_config(MIG_PARTED)
"""The cluster's mig-parted config (the GPU Operator's defaults and one partly-MIG layout), read by the
extender from its ConfigMap and by the MIG Manager stand-in."""
MIG_7G = "nvidia.com/mig-7g.80gb"
SYSTEM = "mig-extender"
MIG_3G = "nvidia.com/mig-3g.40gb"
NODEPOOLS = "/apis/karpenter.sh/v1/nodepools"
NODECLAIMS = "/apis/karpenter.sh/v1/nodeclaims"
NODE_CLASS = {
    "apiVersion": "karpenter.kwok.sh/v1alpha1",
    "kind": "KWOKNodeClass",
    "metadata": {"name": "default"},
    "spec": {"nodeRegistrationDelay": "1s"},
}


DEVICE_PLUGIN_PENDING = {"key": "e2e.mig-extender.io/device-plugin-pending", "effect": "NoSchedule"}
"""A startup taint the MIG Manager stand-in removes once it has applied the layout: on a real node the device
plugin registers its resources after MIG Manager, while the kwok provider's node carries the instance type's
whole GPUs from its start; Karpenter initializes a node only after its startup taints are gone, so it reads
the node's resources as the device plugin leaves them."""


def node_pool(
    name: str, instance_type: str, mig_config: str, taints: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """A MIG NodePool as manifests/karpenter ships them, for the kwok provider's node class."""
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": {"nvidia.com/mig.config": mig_config}},
                "spec": {
                    "requirements": [
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [instance_type]},
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                    ],
                    "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"},
                    "expireAfter": "Never",
                    "startupTaints": [DEVICE_PLUGIN_PENDING],
                    "taints": taints or [],
                },
            },
            "limits": {"nvidia.com/gpu": "64"},
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"},
        },
    }


class MigManagerStandIn(threading.Thread):
    """Gives every new node that has ``nvidia.com/mig.config`` the layout of that config (labels and the
    resources the device plugin registers), then removes its startup taint :data:`DEVICE_PLUGIN_PENDING`."""

    def __init__(self, kube: Kube) -> None:
        super().__init__(daemon=True, name="mig-manager")
        self.kube = kube
        self.stopped = threading.Event()
        self.applied: list[str] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                for node in self.kube.call("GET", "/api/v1/nodes")["items"]:
                    self.apply(node)
                time.sleep(0.5)
        except BaseException as exc:  # reported by stop()
            self.errors.append(exc)

    def apply(self, node: dict[str, Any]) -> None:
        config = node["metadata"].get("labels", {}).get("nvidia.com/mig.config")
        allocatable = node.get("status", {}).get("allocatable") or {}
        taints = node.get("spec", {}).get("taints") or []
        if not config or not any(t["key"] == DEVICE_PLUGIN_PENDING["key"] for t in taints):
            return  # not registered by Karpenter yet (it adds the startup taint then), or done
        name = node["metadata"]["name"]
        gpus = 8  # every GPU instance type of instance-types.json
        product = PRODUCTS[node["metadata"]["labels"]["node.kubernetes.io/instance-type"]]
        pool = Pool("stand-in", model_named(product), gpus, config)
        advertised = pool.advertised(CONFIG)
        counts: dict[str, str | None] = {k: str(v) for k, v in advertised.items()}
        counts["nvidia.com/gpu"] = str(advertised.get("nvidia.com/gpu", 0))  # the GPUs left whole
        for stale in allocatable:  # e.g. counts the kwok provider copied from a NodeOverlay
            if stale.startswith("nvidia.com/mig-"):
                counts.setdefault(stale, None)
        labels = {
            "nvidia.com/gpu.product": product,
            "nvidia.com/gpu.count": str(gpus),
            "nvidia.com/mig.strategy": "mixed",
            "nvidia.com/mig.config.state": "success",
        }
        self.kube.call("PATCH", f"/api/v1/nodes/{name}", {"metadata": {"labels": labels}}, content_type=MERGE)
        self.kube.call(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            {"status": {"allocatable": counts, "capacity": counts}},
            content_type=MERGE,
        )
        left = [t for t in taints if t["key"] != DEVICE_PLUGIN_PENDING["key"]]
        self.kube.call("PATCH", f"/api/v1/nodes/{name}", {"spec": {"taints": left}}, content_type=MERGE)
        self.applied.append(name)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)
        assert not self.errors, f"the MIG Manager stand-in failed: {self.errors!r}"


@pytest.fixture(scope="module")
def karpenter_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """Its own control plane: Karpenter's CRDs and nodes stay out of the other end-to-end tests."""
    bin_dir = default_bin_dir()
    if not all(
        (bin_dir / name).exists() for name in ("kube-apiserver", "kube-scheduler", "kube-controller-manager", "etcd")
    ):
        subprocess.run(["bash", str(ROOT / "scripts/build-control-plane.sh")], check=True, timeout=3600)
    if not all((KARPENTER_BIN_DIR / name).exists() for name in ("karpenter-kwok", "kwok", "crds", "crds-aws")):
        subprocess.run(["bash", str(ROOT / "scripts/build-karpenter.sh")], check=True, timeout=3600)
    with ControlPlane(tmp_path_factory.mktemp("karpenter-plane"), bin_dir) as plane:
        kube = Kube(plane)
        for namespace in (NAMESPACE, SYSTEM, "gpu-operator"):
            kube.ensure_namespace(namespace)
        kube.call(
            "POST",
            "/api/v1/namespaces/gpu-operator/configmaps",
            {"metadata": {"name": "default-mig-parted-config"}, "data": {"config.yaml": yaml.safe_dump(MIG_PARTED)}},
        )
        install_crds(plane, KARPENTER_BIN_DIR / "crds")
        install_crds(plane, KARPENTER_BIN_DIR / "crds-aws")  # EC2NodeClass, for the shipped manifests
        kube.call("POST", "/apis/karpenter.kwok.sh/v1alpha1/kwoknodeclasses", NODE_CLASS)
        kube.call("POST", NODEPOOLS, node_pool(POOL, "p4de.24xlarge", "all-balanced"))
        kube.call("POST", NODEPOOLS, node_pool(OVERLAY_POOL, "p5.48xlarge", "all-7g.80gb"))
        kube.call("POST", NODEPOOLS, node_pool(MIG_REQUEST_POOL, "p4d.24xlarge", "all-1g.5gb"))
        kube.call("POST", NODEPOOLS, node_pool(HALF_POOL, "p4de.24xlarge", HALF_CONFIG))
        kube.call("POST", NODEPOOLS, node_pool(RESEARCH_POOL, "p4de.24xlarge", HALF_CONFIG, [RESEARCH_TAINT]))
        yield plane


@pytest.fixture(scope="module")
def karpenter(karpenter_plane: ControlPlane) -> Iterator[None]:
    """Karpenter's kwok controller and the KWOK controller, in their own process groups."""
    plane = karpenter_plane
    # NodeOverlay: only the overlay tests create NodeOverlays; without them Karpenter behaves as without the gate.
    env = karpenter_env(plane.kubeconfig, feature_gates="NodeOverlay=true")
    processes = []
    try:
        processes.append(
            ("karpenter", spawn("karpenter", [str(KARPENTER_BIN_DIR / "karpenter-kwok")], env, plane.workdir))
        )
        processes.append(("kwok", spawn("kwok", kwok_command(plane.kubeconfig), {}, plane.workdir)))
        yield
    finally:
        for name, process in reversed(processes):
            stop(process, name)


def pools_file(workdir: Path, pool: str = POOL, gpu: str = A100, mig_config: str = "all-balanced") -> Path:
    path = workdir / "pools.yaml"
    entry = {"nodePool": pool, "gpu": gpu, "gpusPerNode": 8, "migConfig": mig_config, "maxNodes": 2}
    path.write_text(yaml.safe_dump({"pools": [entry]}))
    return path


def capacity_requests(kube: Kube) -> list[dict[str, Any]]:
    pods = kube.call("GET", f"/api/v1/namespaces/{SYSTEM}/pods?labelSelector=mig-extender.io/capacity-request")
    return list(pods["items"])


def pool_nodes(kube: Kube, pool: str = POOL) -> list[dict[str, Any]]:
    return list(kube.call("GET", f"/api/v1/nodes?labelSelector=karpenter.sh/nodepool={pool}")["items"])


def claims_of(kube: Kube, pool: str) -> list[dict[str, Any]]:
    return list(kube.call("GET", f"{NODECLAIMS}?labelSelector=karpenter.sh/nodepool={pool}")["items"])


def launched(claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NodeClaims Karpenter has launched: a new one gets its instance-type label only then."""
    return [c for c in claims if "node.kubernetes.io/instance-type" in c["metadata"].get("labels", {})]


def guard_lifted(kube: Kube, node: str) -> bool:
    annotations = kube.call("GET", f"/api/v1/nodes/{node}")["metadata"].get("annotations", {})
    return (
        annotations.get("mig-extender.io/capacity") == "released" and "karpenter.sh/do-not-disrupt" not in annotations
    )


@dataclass(frozen=True)
class RequestCase:
    request_resources: str
    pool: str
    instance_type: str
    product: str
    mig_config: str
    resource: str


REQUEST_CASES = [
    # Whole GPUs, what every Karpenter knows of a p4de.24xlarge, for a layout that leaves four of them whole:
    # the node registers nvidia.com/gpu: 4, so Karpenter marks the NodeClaim (which asked for 8) Initialized.
    RequestCase("gpu", HALF_POOL, "p4de.24xlarge", A100, HALF_CONFIG, MIG_3G),
    # The pool's MIG instances, known to Karpenter through the NodeOverlay: the NodeClaim asks for what the
    # node registers once MIG Manager is done, so Karpenter marks it Initialized; and no second node.
    RequestCase("mig", MIG_REQUEST_POOL, "p4d.24xlarge", A100_40, "all-1g.5gb", "nvidia.com/mig-1g.5gb"),
]


@pytest.mark.parametrize("case", REQUEST_CASES, ids=[c.request_resources for c in REQUEST_CASES])
def test_a_pod_no_layout_fits_gets_a_node_of_the_right_pool_through_karpenter(
    karpenter_plane: ControlPlane, karpenter: None, tmp_path: Path, case: RequestCase
) -> None:
    plane = karpenter_plane
    kube = Kube(plane)
    pools = pools_file(tmp_path, case.pool, case.product, case.mig_config)
    kube.call(
        "POST",
        f"/api/v1/namespaces/{SYSTEM}/configmaps",
        {"metadata": {"name": "mig-extender-pools"}, "data": {"pools.yaml": pools.read_text()}},
        ok=(201, 409),
    )
    overlay = None
    if case.request_resources == "mig":
        overlay = node_overlays(pools)[0]
        kube.call("POST", "/apis/karpenter.sh/v1alpha1/nodeoverlays", overlay)
    extender = Extender(
        plane,
        tmp_path,
        [
            *("--provision", "requests", "--provision-request-resources", case.request_resources),
            *("--provision-pools-file", str(pools), "--provision-interval-s", "1", "--provision-debounce-s", "2"),
        ],
    )
    mig_manager = MigManagerStandIn(kube)
    scheduler = None
    pod = f"inference-{case.request_resources}"
    extender.start()
    try:
        scheduler = start_scheduler(plane, tmp_path, "extender", extender.url)
        mig_manager.start()
        kube.create_pod(pod, {case.resource: 1})

        wait_for(
            "the no-layout-fits verdict",
            lambda: kube.pod(pod)["metadata"].get("annotations", {}).get("mig-extender.io/verdict") == "no-layout-fits",
            timeout=30,
        )
        if case.request_resources == "gpu":
            (request,) = wait_for("a capacity request", lambda: capacity_requests(kube), timeout=30)
            assert request["spec"]["nodeSelector"] == {"karpenter.sh/nodepool": case.pool}
            assert request["spec"]["containers"][0]["resources"]["requests"] == {"nvidia.com/gpu": "8"}
            conditions = {c["type"]: c for c in request["status"]["conditions"]}
            assert conditions["PodScheduled"]["reason"] == "Unschedulable"
        # With the NodeOverlay Karpenter may launch for the pod itself before the loop asks: the loop counts
        # that NodeClaim as arriving capacity, so either way there is exactly one node.

        (claim,) = wait_for("a NodeClaim", lambda: claims_of(kube, case.pool), timeout=60)
        (node,) = wait_for("a node of the pool", lambda: pool_nodes(kube, case.pool), timeout=60)
        name = node["metadata"]["name"]
        assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == case.instance_type

        wait_for("the capacity request gone", lambda: not capacity_requests(kube), timeout=30)
        bound = kube.wait_bound(pod, timeout=90)
        assert bound == name, "scheduled through the extender onto the new node"
        # With the NodeOverlay the kwok node advertises the MIG counts from its start, so the pod may bind
        # before the stand-in's next pass; the layout is applied all the same.
        wait_for("the node's MIG layout applied", lambda: name in mig_manager.applied, timeout=30)

        wait_for("the new node's guard lifted once the pod runs there", lambda: guard_lifted(kube, name), timeout=30)
        assert len(claims_of(kube, case.pool)) == 1, "one node, not one per reconcile"
        assert not capacity_requests(kube)
        reasons = {e["reason"] for e in kube.events_for(pod)}
        assert "MigNoLayoutFits" in reasons
        if case.request_resources == "gpu":
            assert "MigCapacityRequested" in reasons
        # What the device plugin registered is what the NodeClaim asked for (with whole GPUs of a pool whose
        # GPUs are all in MIG mode it would stay Initialized=Unknown, ResourceNotRegistered).
        wait_for("Karpenter's NodeClaim Initialized", lambda: initialized(kube, claim), timeout=30)
    finally:
        mig_manager.stop()
        if scheduler is not None:
            plane.stop_scheduler(scheduler)
        extender.stop()
        if overlay is not None:
            kube.call(
                "DELETE", f"/apis/karpenter.sh/v1alpha1/nodeoverlays/{overlay['metadata']['name']}", ok=(200, 404)
            )


def node_overlays(pools: Path) -> list[dict[str, Any]]:
    printed = subprocess.run(
        [sys.executable, "-m", "extender", "nodeoverlays", "--pools", str(pools)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return list(yaml.safe_load_all(printed))


def initialized(kube: Kube, claim: dict[str, Any]) -> bool:
    current = kube.call("GET", f"{NODECLAIMS}/{claim['metadata']['name']}")
    conditions = {c["type"]: c["status"] for c in current.get("status", {}).get("conditions", [])}
    return conditions.get("Initialized") == "True"


def test_overlay_mode_karpenter_provisions_for_the_mig_pod_itself(
    karpenter_plane: ControlPlane, karpenter: None, tmp_path: Path
) -> None:
    """With the NodeOverlay that ``mig-extender nodeoverlays`` prints, Karpenter knows the pool's MIG counts."""
    plane = karpenter_plane
    kube = Kube(plane)
    pools = pools_file(tmp_path, OVERLAY_POOL, H100, "all-7g.80gb")
    (overlay,) = node_overlays(pools)
    assert overlay["spec"]["capacity"] == {MIG_7G: "8"}
    kube.call("POST", "/apis/karpenter.sh/v1alpha1/nodeoverlays", overlay)
    extender = Extender(
        plane, tmp_path, ["--provision", "overlay", "--provision-pools-file", str(pools), "--provision-interval-s", "1"]
    )
    mig_manager = MigManagerStandIn(kube)
    scheduler = None
    extender.start()
    try:
        scheduler = start_scheduler(plane, tmp_path, "extender", extender.url)
        mig_manager.start()
        kube.create_pod("training", {MIG_7G: 1})
        (claim,) = wait_for(
            "a launched NodeClaim of the H100 pool", lambda: launched(claims_of(kube, OVERLAY_POOL)), timeout=90
        )
        assert claim["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "p5.48xlarge"
        bound = kube.wait_bound("training", timeout=90)
        assert bound in {n["metadata"]["name"] for n in pool_nodes(kube, OVERLAY_POOL)}
        wait_for("the new node's guard lifted once the pod runs there", lambda: guard_lifted(kube, bound), timeout=30)
        assert not capacity_requests(kube), "overlay mode makes no capacity requests"
        assert len(claims_of(kube, OVERLAY_POOL)) == 1
    finally:
        mig_manager.stop()
        if scheduler is not None:
            plane.stop_scheduler(scheduler)
        extender.stop()
        kube.call("DELETE", f"/apis/karpenter.sh/v1alpha1/nodeoverlays/{overlay['metadata']['name']}", ok=(200, 404))


def clean_slate(kube: Kube) -> None:
    """No MIG pods, Karpenter nodes or capacity-request Events left by the tests before (a node with free
    3g.40gb would host the next test's pods)."""
    kube.call("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods", ok=(200, 404))
    # Right after the CRDs are made the API server may answer 429 "storage is (re)initializing".
    wait_for("NodeClaims listed", lambda: karpenter_plane_ok(kube, NODECLAIMS), timeout=30)
    for claim in kube.call("GET", NODECLAIMS)["items"]:
        kube.call("DELETE", f"{NODECLAIMS}/{claim['metadata']['name']}", ok=(200, 404))
    kube.call("DELETE", f"/apis/events.k8s.io/v1/namespaces/{SYSTEM}/events", ok=(200, 404))
    wait_for(
        "the earlier tests' pods, NodeClaims and nodes gone",
        lambda: (
            not kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
            and not kube.call("GET", NODECLAIMS)["items"]
            and not kube.call("GET", "/api/v1/nodes")["items"]
        ),
        timeout=90,
    )


def karpenter_plane_ok(kube: Kube, path: str) -> bool:
    status, _ = kube.plane.request("GET", path)
    return bool(status == 200)


def capacity_notes(kube: Kube, pool: str) -> list[str]:
    """What the loop said when it made each capacity request of ``pool`` (the requests are gone by then)."""
    events = kube.call("GET", f"/apis/events.k8s.io/v1/namespaces/{SYSTEM}/events")["items"]
    return [
        e["note"]
        for e in events
        if e["reason"] == "MigCapacityRequested" and e["regarding"]["name"].startswith(f"mig-capacity-{pool}-")
    ]


def test_a_burst_of_pods_is_planned_as_the_fewest_nodes_in_one_plan(
    karpenter_plane: ControlPlane, karpenter: None, tmp_path: Path
) -> None:
    """Twelve 3g.40gb pods created within a second: two nodes (eight 3g.40gb each), asked for in one plan."""
    plane = karpenter_plane
    kube = Kube(plane)
    clean_slate(kube)
    pools = pools_file(tmp_path, HALF_POOL, A100, HALF_CONFIG)
    kube.call(
        "POST",
        f"/api/v1/namespaces/{SYSTEM}/configmaps",
        {"metadata": {"name": "mig-extender-pools"}, "data": {"pools.yaml": pools.read_text()}},
        ok=(201, 409),
    )
    extender = Extender(
        plane,
        tmp_path,
        [
            *("--provision", "requests", "--provision-request-resources", "gpu"),
            *("--provision-pools-file", str(pools), "--provision-interval-s", "1", "--provision-debounce-s", "2"),
        ],
    )
    mig_manager = MigManagerStandIn(kube)
    scheduler = None
    pods = [f"burst-{i}" for i in range(12)]
    extender.start()
    try:
        scheduler = start_scheduler(plane, tmp_path, "extender", extender.url)
        mig_manager.start()
        started = time.monotonic()
        for pod in pods:
            kube.create_pod(pod, {MIG_3G: 1})
        assert time.monotonic() - started < 1.0, "the burst took over a second to create"

        bound = {pod: kube.wait_bound(pod, timeout=120) for pod in pods}
        nodes = {n["metadata"]["name"] for n in pool_nodes(kube, HALF_POOL)}
        assert set(bound.values()) <= nodes and len(set(bound.values())) == 2, bound
        assert len(claims_of(kube, HALF_POOL)) == 2, "the fewest nodes: eight 3g.40gb on each"
        notes = capacity_notes(kube, HALF_POOL)
        assert len(notes) == 2 and all("for 12 pending MIG pod(s)" in note for note in notes), (
            f"both requests from one plan of the whole burst: {notes}"
        )
    finally:
        mig_manager.stop()
        if scheduler is not None:
            plane.stop_scheduler(scheduler)
        extender.stop()
        for pod in pods:
            kube.delete_pod(pod)


def test_no_whole_gpu_request_for_a_pool_whose_gpus_are_all_in_mig_mode(
    karpenter_plane: ControlPlane, karpenter: None, tmp_path: Path
) -> None:
    """Its nodes register ``nvidia.com/gpu: 0``: a NodeClaim asked for with whole GPUs would never be
    Initialized. The loop asks for none and says why on the pod and in its metrics."""
    plane = karpenter_plane
    kube = Kube(plane)
    clean_slate(kube)
    pools = pools_file(tmp_path, POOL, A100, "all-balanced")
    extender = Extender(
        plane,
        tmp_path,
        [
            *("--provision", "requests", "--provision-request-resources", "gpu"),
            *("--provision-pools-file", str(pools), "--provision-interval-s", "1", "--provision-debounce-s", "1"),
        ],
    )
    extender.start()
    try:
        kube.create_pod("whole-gpus-refused", {MIG_3G: 1})
        (warning,) = wait_for(
            "the Warning that says why",
            lambda: [e for e in kube.events_for("whole-gpus-refused") if e["reason"] == "MigNoNodePoolFits"],
            timeout=60,
        )
        assert f"NodePool {POOL} would host it" in warning["note"], warning["note"]
        assert "nvidia.com/gpu: 0" in warning["note"] and "--provision-request-resources mig" in warning["note"]
        with urllib.request.urlopen(extender.url + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert f'mig_extender_capacity_pools_refused{{nodepool="{POOL}",reason="no-whole-gpus"}} 1.0' in metrics
        time.sleep(3)  # three more reconciles
        assert not capacity_requests(kube) and not claims_of(kube, POOL)
    finally:
        extender.stop()
        kube.delete_pod("whole-gpus-refused")


def core_events(kube: Kube, pod: str) -> list[dict[str, Any]]:
    """core/v1 Events of a test pod: what Karpenter's recorder writes (source.component karpenter)."""
    return list(
        kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/events?fieldSelector=involvedObject.name={pod}")["items"]
    )


def test_overlay_mode_asks_for_a_node_when_karpenter_nominates_an_existing_one(
    karpenter_plane: ControlPlane, karpenter: None, tmp_path: Path
) -> None:
    """``gpu-full`` counts two free ``nvidia.com/mig-3g.40gb``, but used ``1g.10gb`` instances at slices 3 and
    4 of its dynamic GPU leave no 3g placement (its exact annotation). Karpenter, counting, nominates it for a
    3g.40gb pod and launches nothing; the loop reads that, says so on the pod and asks for a node."""
    plane = karpenter_plane
    kube = Kube(plane)
    clean_slate(kube)
    full = {
        "version": "v1",
        "gpus": [
            {
                "index": 0,
                "product": H100,
                "mode": "dynamic",
                "instances": [{"profile": "1g.10gb", "start": 3}, {"profile": "1g.10gb", "start": 4}],
            }
        ],
    }
    kube.create_node("gpu-full", H100, allocatable={MIG_3G: 2, "nvidia.com/mig-1g.10gb": 7}, annotation=full)
    pools = pools_file(tmp_path, POOL, A100, "all-balanced")
    (overlay,) = node_overlays(pools)
    kube.call("POST", "/apis/karpenter.sh/v1alpha1/nodeoverlays", overlay)
    extender = Extender(
        plane,
        tmp_path,
        [
            *("--provision", "overlay", "--provision-pools-file", str(pools), "--provision-interval-s", "1"),
            *("--provision-debounce-s", "2", "--provision-overlay-wait-s", "60"),
        ],
    )
    mig_manager = MigManagerStandIn(kube)
    scheduler = None
    pod = "nominated"
    extender.start()
    try:
        scheduler = start_scheduler(plane, tmp_path, "extender", extender.url)
        mig_manager.start()
        kube.create_pod(pod, {MIG_3G: 1})
        wait_for(
            "Karpenter's Nominated Event naming gpu-full",
            lambda: [
                e
                for e in core_events(kube, pod)
                if e["reason"] == "Nominated"
                and "node/gpu-full" in e["message"]
                and e["source"].get("component") == "karpenter"
            ],
            timeout=60,
        )
        (said,) = wait_for(
            "the loop's Warning on the pod",
            lambda: [e for e in kube.events_for(pod) if e["reason"] == "MigNoNodeLaunched"],
            timeout=30,
        )
        assert "node/gpu-full" in said["note"] and f"NodePool {POOL}" in said["note"], said["note"]
        assert "node/gpu-full" in kube.pod(pod)["metadata"]["annotations"]["mig-extender.io/provisioning"]
        bound = kube.wait_bound(pod, timeout=120)
        assert bound in {n["metadata"]["name"] for n in pool_nodes(kube, POOL)}, "a new node of the pool"
        assert len(claims_of(kube, POOL)) == 1
        wait_for(
            "the provisioning annotation cleared once the pod is bound",
            lambda: "mig-extender.io/provisioning" not in (kube.pod(pod)["metadata"].get("annotations") or {}),
            timeout=30,
        )
        log = extender.log()
        assert "cannot list Karpenter's Events" not in log
    finally:
        mig_manager.stop()
        if scheduler is not None:
            plane.stop_scheduler(scheduler)
        extender.stop()
        kube.delete_pod(pod)
        kube.call("DELETE", f"/apis/karpenter.sh/v1alpha1/nodeoverlays/{overlay['metadata']['name']}", ok=(200, 404))
        kube.call("DELETE", "/api/v1/nodes/gpu-full", ok=(200, 404))


def test_a_pool_whose_taint_the_pod_does_not_tolerate_is_not_asked_for(
    karpenter_plane: ControlPlane, karpenter: None, tmp_path: Path
) -> None:
    """Two pools host a 3g.40gb pod; the cheaper one's NodePool taints its nodes ``dedicated=research``,
    which the pod does not tolerate: its node would come up and the pod would never bind there."""
    plane = karpenter_plane
    kube = Kube(plane)
    clean_slate(kube)
    pools = tmp_path / "pools.yaml"
    entries = [
        {"nodePool": RESEARCH_POOL, "gpu": A100, "gpusPerNode": 8, "migConfig": HALF_CONFIG, "cost": 0.5},
        {"nodePool": HALF_POOL, "gpu": A100, "gpusPerNode": 8, "migConfig": HALF_CONFIG, "cost": 1.0},
    ]
    pools.write_text(yaml.safe_dump({"pools": entries}))
    extender = Extender(
        plane,
        tmp_path,
        [
            *("--provision", "requests", "--provision-request-resources", "gpu"),
            *("--provision-pools-file", str(pools), "--provision-interval-s", "1", "--provision-debounce-s", "2"),
        ],
    )
    mig_manager = MigManagerStandIn(kube)
    scheduler = None
    pod = "not-research"
    extender.start()
    try:
        scheduler = start_scheduler(plane, tmp_path, "extender", extender.url)
        mig_manager.start()
        kube.create_pod(pod, {MIG_3G: 1})
        (claim,) = wait_for("a NodeClaim", lambda: claims_of(kube, HALF_POOL) + claims_of(kube, RESEARCH_POOL), 60)
        assert claim["metadata"]["labels"]["karpenter.sh/nodepool"] == HALF_POOL, "the pool the pod may use"
        bound = kube.wait_bound(pod, timeout=90)
        assert bound in {n["metadata"]["name"] for n in pool_nodes(kube, HALF_POOL)}
        assert not claims_of(kube, RESEARCH_POOL)
    finally:
        mig_manager.stop()
        if scheduler is not None:
            plane.stop_scheduler(scheduler)
        extender.stop()
        kube.delete_pod(pod)


KARPENTER_OBJECTS = manifest_objects(karpenter=True)


@pytest.mark.parametrize(("where", "obj"), KARPENTER_OBJECTS, ids=[w for w, _ in KARPENTER_OBJECTS])
def test_shipped_karpenter_manifests_pass_a_server_side_dry_run(
    karpenter_plane: ControlPlane, where: str, obj: dict[str, Any]
) -> None:
    """manifests/karpenter against the CRDs of Karpenter v1.14.1 and its AWS provider (strict fields, CEL)."""
    path = KARPENTER_PATHS[obj["kind"]]
    status, body = karpenter_plane.request("POST", f"{path}?dryRun=All&fieldValidation=Strict", obj)
    assert status in (200, 201), f"{where}: {status} {body}"


def test_every_shipped_nodepool_has_a_pool_and_an_overlay() -> None:
    kinds: dict[str, set[str]] = {}
    for _, obj in KARPENTER_OBJECTS:
        kinds.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
    config_map = yaml.safe_load((ROOT / "manifests/karpenter/pools.yaml").read_text())
    pools = {p["nodePool"] for p in yaml.safe_load(config_map["data"]["pools.yaml"])["pools"]}
    assert pools == kinds["NodePool"]
    assert {f"mig-{p}" for p in pools} == kinds["NodeOverlay"]
