"""The catalog against a real H200 readout, GFD product labels and PCI ids."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from extender.model.catalog import MODELS, CatalogError, model_for_pci_id, model_named, parse_product_label

# A real `nvidia-smi mig -lgipp` readout of an H200 (with `-lgip` and NVML's profile info), provided beside the
# repository in CI; the test is skipped where it is absent.
H200_READOUT = Path(__file__).resolve().parents[3] / "shared" / "reference" / "h200-nvidia-smi.txt"


def _readout() -> str:
    if not H200_READOUT.exists():
        pytest.skip(f"no H200 readout at {H200_READOUT}: it is provided beside the repository in CI, not shipped")
    return H200_READOUT.read_text()


def test_h200_profiles_equal_the_real_nvidia_smi_readout() -> None:
    text = _readout()
    placements = {
        int(m["id"]): (tuple(int(s) for s in m["starts"].split(",")), int(m["size"]))
        for m in re.finditer(r"Profile ID\s+(?P<id>\d+) Placements?\s*: \{(?P<starts>[\d,]+)\}:(?P<size>\d+)", text)
    }
    nvml = {
        int(m["id"]): m
        for m in re.finditer(
            r"^MIG (?P<name>\S+)\s+id (?P<id>\d+)\s+max (?P<max>\d+) slices (?P<g>\d+) "
            r"mem (?P<mem>\d+) MB\s+SM (?P<sm>\d+)",
            text,
            re.MULTILINE,
        )
    }
    assert len(placements) == len(nvml) == 7
    model = model_named("H200-141GB")
    assert {p.profile_id for p in model.profiles} == set(nvml)
    for profile in model.profiles:
        assert profile.profile_id is not None
        row = nvml[profile.profile_id]
        assert profile.name == row["name"]
        assert profile.max_instances == int(row["max"])
        assert profile.compute_slices == int(row["g"])
        assert profile.memory_mib == int(row["mem"])
        assert profile.multiprocessors == int(row["sm"])
        assert (profile.starts, profile.memory_slices) == placements[profile.profile_id]
        assert profile.placements_verified


@pytest.mark.parametrize(
    ("label", "model", "profile"),
    [
        ("NVIDIA-A100-SXM4-40GB", "A100-40GB", None),
        ("NVIDIA-A100-PCIE-40GB", "A100-40GB", None),
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB", None),
        ("NVIDIA-A100-80GB-PCIe", "A100-80GB", None),
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB", None),
        ("NVIDIA-H100-PCIe", "H100-80GB", None),
        ("NVIDIA-H100-NVL", "H100-NVL-94GB", None),
        ("NVIDIA-H200", "H200-141GB", None),
        ("NVIDIA-H200-NVL", "H200-141GB", None),
        ("NVIDIA-H20", "H100-96GB", None),
        ("NVIDIA-GH200-480GB", "H100-96GB", None),
        ("NVIDIA-GH200-144G-HBM3e", "GH200-144GB", None),
        ("NVIDIA-B200", "B200", None),
        ("NVIDIA-GB200", "GB200", None),
        ("NVIDIA-A30", "A30-24GB", None),
        ("NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition", "RTX-PRO-6000", None),
        ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "A100-40GB", "1g.5gb"),
        ("NVIDIA-H100-80GB-HBM3-MIG-3g.40gb", "H100-80GB", "3g.40gb"),
        ("NVIDIA-A100-SXM4-80GB-MIG-7g.79gb", "A100-80GB", "7g.80gb"),  # stale name accepted as alias
    ],
)
def test_gfd_product_labels(label: str, model: str, profile: str | None) -> None:
    parsed = parse_product_label(label)
    assert parsed.model.name == model
    assert (parsed.single_profile.name if parsed.single_profile else None) == profile


def test_single_strategy_invalid_layout_is_recognised() -> None:
    parsed = parse_product_label("NVIDIA-A100-SXM4-40GB-MIG-INVALID")
    assert parsed.invalid_layout and parsed.single_profile is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("NVIDIA-Tesla-T4", "unknown GPU product 'NVIDIA-Tesla-T4'"),
        ("NVIDIA-A100-SXM4-40GB-MIG-1g.6gb", "has no MIG profile '1g.6gb' (did you mean 1g.5gb"),
    ],
)
def test_bad_product_labels_name_the_problem(value: str, message: str) -> None:
    with pytest.raises(CatalogError, match=re.escape(message)):
        parse_product_label(value)


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(CatalogError, match=r"did you mean A100-40GB"):
        model_named("A1OO-40GB")


@pytest.mark.parametrize(
    ("pci", "model"),
    [("0x20B010DE", "A100-40GB"), ("0x2335", "H200-141GB"), ("0x20b710de", "A30-24GB"), ("0x290110DE", "B200")],
)
def test_pci_device_ids(pci: str, model: str) -> None:
    found = model_for_pci_id(pci)
    assert found is not None and found.name == model


def test_every_model_is_consistent() -> None:
    for model in MODELS:
        seen_ids = set()
        for p in model.profiles:
            assert p.compute_slices <= p.memory_slices <= model.memory_slices, (model.name, p.name)
            assert all(s >= 0 and s + p.memory_slices <= model.memory_slices for s in p.starts), p.name
            if p.profile_id is not None:
                assert p.profile_id not in seen_ids, (model.name, p.profile_id)
                seen_ids.add(p.profile_id)
            assert model.find_profile(p.resource_name) is p
        # The parts whose placements no public `nvidia-smi mig -lgipp` readout confirms are flagged.
        if model.name in {"B200", "GB200", "B300", "GB300", "RTX-PRO-6000"}:
            assert not model.placements_verified


def test_resource_names_follow_the_device_plugin() -> None:
    h100 = model_named("H100-80GB")
    assert h100.profile("1g.10gb+me").resource_name == "nvidia.com/mig-1g.10gb.me"
    assert h100.find_profile("mig-1g.10gb.me") is h100.profile("1g.10gb+me")
    # The same name means different profiles on different models: 1g.10gb is the 2-slot 1g on A100-40GB.
    assert model_named("A100-40GB").profile("1g.10gb").memory_slices == 2
    assert h100.profile("1g.10gb").memory_slices == 1
