"""GPU products not in the catalog: matched exactly, never by prefix; such nodes are left to kube-scheduler.

Issue 25, item 8: ``NVIDIA-A100-81GB`` was read as an A100-40GB, so a node advertising eight
``nvidia.com/mig-3g.40gb`` refused a 3g.40gb pod as unresolvable ("A100-40GB offers no profile 3g.40gb").
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import generate_latest

from extender.metrics import Metrics
from extender.model.catalog import CatalogError, parse_product_label
from extender.model.demand import PodDemand
from extender.model.migparted import DEFAULT_CONFIG
from extender.model.policy import PodVerdict, PolicyConfig, cluster_verdict
from extender.server.scheduling import SchedulingService
from extender.server.wire import ExtenderArgs
from extender.settings import Settings
from extender.view.store import ClusterView, Kind
from tests.builders import pod
from tests.support import Clock


@pytest.mark.parametrize(
    ("label", "model", "profile"),
    [
        ("A100-SXM4-40GB-MIG-1g.5gb", "A100-40GB", "1g.5gb"),  # older drivers: no NVIDIA prefix
        ("NVIDIA-A100-SXM-80GB", "A100-80GB", None),
        ("NVIDIA-A800-SXM4-80GB", "A100-80GB", None),
        ("NVIDIA-H800", "H100-80GB", None),
        ("NVIDIA-B300-SXM6-AC", "B300", None),
        # Time-slicing or MPS without renaming appends -SHARED, after the single strategy's MIG profile.
        ("NVIDIA-A100-SXM4-40GB-SHARED", "A100-40GB", None),
        ("NVIDIA-H100-80GB-HBM3-MIG-1g.10gb-SHARED", "H100-80GB", "1g.10gb"),
    ],
)
def test_gfd_product_forms(label: str, model: str, profile: str | None) -> None:
    parsed = parse_product_label(label)
    assert parsed.model.name == model
    assert (parsed.single_profile.name if parsed.single_profile else None) == profile


@pytest.mark.parametrize(
    "label",
    [
        "NVIDIA-A100-81GB",  # was an A100-40GB: any name starting A100 was
        "NVIDIA-A100-SXM4-40GB-EXTRA",
        "NVIDIA-H100-80GB-HBM3e",  # was an H100-80GB
        "NVIDIA-H200-SXM5-141GB",  # was an H200
        "NVIDIA-GH200-96GB-FUTURE",  # was an H100-96GB
        "NVIDIA-B200X",
        "NVIDIA-A30X",
        "NVIDIA-Tesla-T4-SHARED",
    ],
)
def test_names_that_only_start_like_a_product_are_unknown(label: str) -> None:
    with pytest.raises(CatalogError, match=re.escape(f"unknown GPU product {label!r}")):
        parse_product_label(label)


def test_catalog_names_and_pci_ids_still_name_models() -> None:
    from extender.model.catalog import model_named

    assert model_named("H100-80GB").name == "H100-80GB"
    assert model_named("0x233010DE").name == "H100-80GB"
    assert model_named("A30").name == "A30-24GB"
    assert model_named("NVIDIA-H100-80GB-HBM3").name == "H100-80GB"


def _node(name: str, product: str, allocatable: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "1", "labels": {"nvidia.com/gpu.product": product}},
        "status": {"allocatable": allocatable},
    }


def _view_with(*nodes: dict[str, Any]) -> ClusterView:
    view = ClusterView(clock=Clock())
    view.replace(Kind.NODES, nodes)
    view.replace(Kind.PODS, [])
    view.replace(Kind.CONFIG, [])
    return view


UNKNOWN_A100 = _node("a100-81", "NVIDIA-A100-81GB", {"nvidia.com/mig-3g.40gb": "8"})
THREE_G = pod("p", limits={"nvidia.com/mig-3g.40gb": 1})


def test_filter_passes_a_node_it_cannot_evaluate_and_counts_why() -> None:
    view = _view_with(UNKNOWN_A100)
    metrics = Metrics(view)
    service = SchedulingService(view, Settings(), metrics, clock=view.clock)
    result = service.filter(ExtenderArgs(pod=THREE_G, node_names=["a100-81"], nodes=None))
    assert result["NodeNames"] == ["a100-81"] and not result["FailedNodes"]
    assert not result.get("FailedAndUnresolvableNodes")
    counted = metrics.filter_outcomes.labels("Success", "unknown-gpu-product")._value.get()
    assert counted == 1


def test_the_verdict_follows_kube_schedulers_counts_on_such_a_node() -> None:
    view = _view_with(UNKNOWN_A100)
    verdict = cluster_verdict(PodDemand(mig=(("3g.40gb", 1),)), view.node_states(), PolicyConfig(), DEFAULT_CONFIG)
    assert verdict.verdict is PodVerdict.FITS and verdict.node == "a100-81"
    # Counts that do not admit the pod (a T4 node advertises no MIG instance) are no place for it, and no
    # reason to name the node's product as a shape that cannot host it.
    t4 = _view_with(_node("t4", "NVIDIA-Tesla-T4", {"nvidia.com/gpu": "1"}))
    verdict = cluster_verdict(PodDemand(mig=(("3g.40gb", 1),)), t4.node_states(), PolicyConfig(), DEFAULT_CONFIG)
    assert verdict.verdict is PodVerdict.NO_LAYOUT_FITS and "not in the catalog" in verdict.reason


def test_counts_follow_the_pods_bound_there() -> None:
    bound = pod("b", limits={"nvidia.com/mig-3g.40gb": 8}, node_name="a100-81")
    bound["status"]["phase"] = "Running"
    view = _view_with(UNKNOWN_A100)
    view.apply(Kind.PODS, "ADDED", bound)
    verdict = cluster_verdict(PodDemand(mig=(("3g.40gb", 1),)), view.node_states(), PolicyConfig(), DEFAULT_CONFIG)
    assert verdict.verdict is PodVerdict.NO_LAYOUT_FITS


def test_unknown_products_are_counted_per_product_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    view = _view_with(*(_node(f"n{i}", "NVIDIA-A100-81GB", {"nvidia.com/mig-3g.40gb": "8"}) for i in range(3)))
    with caplog.at_level("WARNING"):
        list(view.node_states())
        list(view.node_states())
    assert view.counters.unknown_product_nodes() == {"NVIDIA-A100-81GB": 3}
    assert sum("NVIDIA-A100-81GB" in r.getMessage() for r in caplog.records) == 1
    text = generate_latest(Metrics(view).registry).decode()
    assert 'mig_extender_unknown_gpu_products{product="NVIDIA-A100-81GB"} 3.0' in text


def test_the_report_names_nodes_left_to_kube_scheduler() -> None:
    from extender.report import build_report, render_text

    view = _view_with(UNKNOWN_A100, _node("t4", "NVIDIA-Tesla-T4", {"nvidia.com/gpu": "1"}))
    text = render_text(build_report(view, {"1g": 1.0}, "test"))
    assert "left to kube-scheduler (GPU product not in the catalog): NVIDIA-A100-81GB (1 nodes)" in text
    assert "NVIDIA-Tesla-T4 (1 nodes)" in text
