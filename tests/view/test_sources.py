"""Layout sources: derived from labels and the mig-parted config, from counts, and the exact annotation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from extender.model.demand import PodDemand
from extender.model.layouts import layout_text
from extender.model.migparted import DEFAULT_CONFIG
from extender.model.state import Fidelity, MigStrategy
from extender.view.objects import NodeInfo
from extender.view.sources import AnnotationError, Usage, build_node_state, parse_gpus_annotation


def raw_node(
    labels: dict[str, str], allocatable: dict[str, str] | None = None, annotation: Any = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "n1", "labels": labels, "resourceVersion": "7"}
    if annotation is not None:
        metadata["annotations"] = {
            "mig-extender.io/gpus": annotation if isinstance(annotation, str) else json.dumps(annotation)
        }
    return {"metadata": metadata, "status": {"allocatable": {"cpu": "8", **(allocatable or {})}}}


H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "2"}
BALANCED_ALLOCATABLE = {"nvidia.com/mig-1g.10gb": "4", "nvidia.com/mig-2g.20gb": "2", "nvidia.com/mig-3g.40gb": "2"}


def usage(**mig: int) -> Usage:
    u = Usage()
    u.add(PodDemand(mig=tuple((k.replace("_", "."), v) for k, v in mig.items())))
    return u


def state(raw: dict[str, Any], used: Usage | None = None):  # type: ignore[no-untyped-def]
    return build_node_state(NodeInfo.from_raw(raw), used or Usage(), DEFAULT_CONFIG)


def test_layout_from_mig_config_label() -> None:
    s = state(
        raw_node({**H100, "nvidia.com/mig.config": "all-balanced"}, BALANCED_ALLOCATABLE), usage(**{"3g_40gb": 1})
    )
    assert s.fidelity is Fidelity.LAYOUT and not s.warnings
    assert [layout_text([i.placement for i in g.instances]) for g in s.gpus] == [
        "2g.20gb@0 1g.10gb@2 1g.10gb@3 3g.40gb@4"
    ] * 2
    assert [i.used for g in s.gpus for i in g.instances if i.profile.name == "3g.40gb"] == [True, False]


def test_allocatable_that_disagrees_with_the_config_wins() -> None:
    # MIG Manager has not applied all-7g.80gb yet: the device plugin still advertises the balanced layout
    s = state(
        raw_node(
            {**H100, "nvidia.com/mig.config": "all-7g.80gb", "nvidia.com/mig.config.state": "pending"},
            BALANCED_ALLOCATABLE,
        )
    )
    assert s.fidelity is Fidelity.COUNTS
    assert "allocatable differs from mig-parted config 'all-7g.80gb' (mig.config.state=pending)" in s.warnings[0]
    assert sum(len(g.instances) for g in s.gpus) == 8


def test_counts_only() -> None:
    s = state(raw_node(H100, {"nvidia.com/mig-3g.40gb": "3", "nvidia.com/mig-1g.10gb": "2"}))
    assert s.fidelity is Fidelity.COUNTS
    assert sorted(layout_text([i.placement for i in g.instances]) for g in s.gpus) == [
        "1g.10gb@2 1g.10gb@3 3g.40gb@4",
        "3g.40gb@0 3g.40gb@4",
    ]


def test_whole_gpus_without_mig() -> None:
    s = state(raw_node(H100, {"nvidia.com/gpu": "1", "nvidia.com/mig-3g.40gb": "2"}))
    assert [g.mig_enabled for g in s.gpus] == [True, False]


def test_single_strategy() -> None:
    labels = {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",
        "nvidia.com/gpu.count": "1",
        "nvidia.com/mig.strategy": "single",
    }
    s = state(raw_node(labels, {"nvidia.com/gpu": "7"}), Usage(gpus=3))
    assert s.strategy is MigStrategy.SINGLE and s.single_profile is not None
    assert sum(i.used for i in s.gpus[0].instances) == 3


def test_dynamic_mode_label() -> None:
    s = state(raw_node({**H100, "mig-extender.io/mode": "dynamic"}), usage(**{"3g_40gb": 1}))
    assert all(g.dynamic for g in s.gpus)
    assert [str(i.placement) for i in s.gpus[0].instances] == ["3g.40gb@0"]  # first-fit estimate


def test_nodes_without_gpus_or_with_unknown_products() -> None:
    assert state(raw_node({})).gpus == ()
    unknown = state(raw_node({"nvidia.com/gpu.product": "NVIDIA-Tesla-T4"}))
    # Not a per-node warning any more: the product is kept on the state (and the view logs it once per product).
    assert unknown.gpus == () and unknown.unknown_product is not None
    assert unknown.unknown_product.product == "NVIDIA-Tesla-T4"


EXACT = {
    "version": "v1",
    "gpus": [
        {
            "index": 0,
            "product": "NVIDIA-H100-80GB-HBM3",
            "mode": "static",
            "instances": [
                {"profile": "3g.40gb", "start": 4, "size": 4, "used": True},
                {"profile": "4g.40gb", "start": 0, "used": False},
            ],
        },
        {"index": 1, "product": "H100-80GB", "mode": "dynamic", "instances": [{"profile": "1g.10gb", "start": 6}]},
    ],
}


def test_exact_annotation_drives_the_state() -> None:
    s = state(raw_node({**H100, "nvidia.com/mig.config": "all-balanced"}, BALANCED_ALLOCATABLE, EXACT))
    assert s.fidelity is Fidelity.EXACT
    assert [layout_text([i.placement for i in g.instances]) for g in s.gpus] == ["4g.40gb@0 3g.40gb@4", "1g.10gb@6"]
    assert s.gpus[1].dynamic and s.gpus[1].instances[0].used


def test_pods_bound_after_the_agent_reported_are_counted_once() -> None:
    # the agent reports the 3g as used; one bound 3g pod is that same instance, a second one is new
    s = state(
        raw_node(
            H100,
            None,
            {
                "version": "v1",
                "gpus": [
                    {
                        "index": 0,
                        "product": "H100-80GB",
                        "instances": [
                            {"profile": "3g.40gb", "start": 0, "used": True},
                            {"profile": "3g.40gb", "start": 4},
                        ],
                    }
                ],
            },
        ),
        usage(**{"3g_40gb": 2}),
    )
    assert [i.used for i in s.gpus[0].instances] == [True, True]


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ("{nope", "not JSON"),
        ({"version": "v2", "gpus": []}, "version must be 'v1'"),
        ({"version": "v1"}, r"\$.gpus must be list"),
        ({"version": "v1", "gpus": [{"index": 0, "product": "T4"}]}, r"\$.gpus\[0\].product: unknown GPU model"),
        (
            {
                "version": "v1",
                "gpus": [
                    {
                        "index": 0,
                        "product": "H100-80GB",
                        "instances": [{"profile": "3g.40gb", "start": 0}, {"profile": "4g.40gb", "start": 0}],
                    }
                ],
            },
            "overlaps memory slices",
        ),
        (
            {
                "version": "v1",
                "gpus": [
                    {"index": 0, "product": "H100-80GB", "instances": [{"profile": "3g.40gb", "start": 0, "size": 3}]}
                ],
            },
            "size 3 is not 3g.40gb's 4 slices",
        ),
        (
            {"version": "v1", "gpus": [{"index": 0, "product": "H100-80GB"}, {"index": 0, "product": "H100-80GB"}]},
            "repeated",
        ),
        ({"version": "v1", "gpus": [{"index": True, "product": "H100-80GB"}]}, "index must be int"),
        (
            {
                "version": "v1",
                "gpus": [{"index": 0, "product": "H100-80GB", "instances": [{"profile": "3g.41gb", "start": 0}]}],
            },
            "did you mean 3g.40gb",
        ),
    ],
    ids=["json", "version", "gpus", "product", "overlap", "size", "repeated", "bool-index", "profile"],
)
def test_invalid_annotations_name_the_field(annotation: Any, message: str) -> None:
    text = annotation if isinstance(annotation, str) else json.dumps(annotation)
    with pytest.raises(AnnotationError, match=message):
        parse_gpus_annotation(text)


def test_invalid_annotation_falls_back_to_derived_with_a_warning() -> None:
    s = state(raw_node({**H100, "nvidia.com/mig.config": "all-balanced"}, BALANCED_ALLOCATABLE, "{nope"))
    assert s.fidelity is Fidelity.LAYOUT
    assert s.warnings[0].startswith("invalid n1 annotation mig-extender.io/gpus, using derived layout: not JSON")


def test_a_replaced_mig_parted_config_is_read_again_under_the_same_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from extender.model.migparted import parse_config
    from extender.view import sources

    monkeypatch.setattr(sources, "_CONFIGURED_LIMIT", 2)
    raw = raw_node({**H100, "nvidia.com/mig.config": "custom"})
    layouts = []
    for profile in ("7g.80gb", "3g.40gb", "1g.10gb", "7g.80gb"):  # more configs than the cache holds
        count = {"7g.80gb": 1, "3g.40gb": 2, "1g.10gb": 7}[profile]
        config = parse_config(
            {
                "version": "v1",
                "mig-configs": {"custom": [{"devices": "all", "mig-enabled": True, "mig-devices": {profile: count}}]},
            }
        )
        built = build_node_state(NodeInfo.from_raw(raw), Usage(), config)
        layouts.append({i.profile.name for g in built.gpus for i in g.instances})
        assert len(sources._CONFIGURED) <= 2
    assert layouts == [{"7g.80gb"}, {"3g.40gb"}, {"1g.10gb"}, {"7g.80gb"}]
