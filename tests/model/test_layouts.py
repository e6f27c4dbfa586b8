"""Maximal layouts: the 19 of A100-40GB, and all-balanced for every model."""

from __future__ import annotations

import pytest

from extender.model.catalog import MODELS, model_named
from extender.model.layouts import balanced_counts, layout_text, maximal_layouts, place_counts
from extender.model.placement import PlacementError, place_all

# Enumerated from NVML's legal starts of each profile (the MIG User Guide's A100-40GB ``-lgipp``), written as
# profile@start.
A100_40GB_LAYOUTS = {
    "7g.40gb@0",
    "3g.20gb@0 3g.20gb@4",
    "4g.20gb@0 3g.20gb@4",
    "3g.20gb@0 2g.10gb@4 1g.5gb@6",
    "4g.20gb@0 2g.10gb@4 1g.5gb@6",
    "2g.10gb@0 2g.10gb@2 3g.20gb@4",
    "1g.5gb@0 1g.5gb@1 2g.10gb@2 3g.20gb@4",
    "2g.10gb@0 1g.5gb@2 1g.5gb@3 3g.20gb@4",
    "3g.20gb@0 1g.5gb@4 1g.5gb@5 1g.5gb@6",
    "4g.20gb@0 1g.5gb@4 1g.5gb@5 1g.5gb@6",
    "2g.10gb@0 2g.10gb@2 2g.10gb@4 1g.5gb@6",
    "1g.5gb@0 1g.5gb@1 1g.5gb@2 1g.5gb@3 3g.20gb@4",
    "1g.5gb@0 1g.5gb@1 2g.10gb@2 2g.10gb@4 1g.5gb@6",
    "2g.10gb@0 1g.5gb@2 1g.5gb@3 2g.10gb@4 1g.5gb@6",
    "2g.10gb@0 2g.10gb@2 1g.5gb@4 1g.5gb@5 1g.5gb@6",
    "1g.5gb@0 1g.5gb@1 1g.5gb@2 1g.5gb@3 2g.10gb@4 1g.5gb@6",
    "1g.5gb@0 1g.5gb@1 2g.10gb@2 1g.5gb@4 1g.5gb@5 1g.5gb@6",
    "2g.10gb@0 1g.5gb@2 1g.5gb@3 1g.5gb@4 1g.5gb@5 1g.5gb@6",
    "1g.5gb@0 1g.5gb@1 1g.5gb@2 1g.5gb@3 1g.5gb@4 1g.5gb@5 1g.5gb@6",
}


def test_a100_40gb_has_the_19_maximal_layouts_of_the_reference() -> None:
    a100 = model_named("A100-40GB")
    profiles = tuple(a100.profile(n) for n in ("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"))
    layouts = maximal_layouts(a100, profiles)
    assert {layout_text(layout) for layout in layouts} == A100_40GB_LAYOUTS
    assert len(layouts) == 19


def test_with_the_two_slot_1g_there_are_78_layouts_in_38_multisets() -> None:
    a100 = model_named("A100-40GB")
    profiles = tuple(a100.profile(n) for n in ("1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"))
    layouts = maximal_layouts(a100, profiles)
    assert len(layouts) == 78
    assert len({tuple(sorted(p.profile.name for p in layout)) for layout in layouts}) == 38


def test_every_maximal_layout_is_valid_and_maximal() -> None:
    for model in MODELS:
        profiles = tuple(p for p in model.profiles if not p.has_attributes)
        for layout in maximal_layouts(model, profiles):
            occupied = 0
            for placement in layout:
                assert not placement.mask & occupied
                occupied |= placement.mask
            for profile in profiles:
                used = sum(1 for p in layout if p.profile is profile)
                if used < profile.max_instances:
                    assert place_all(model, (profile,), occupied) is None, (model.name, layout_text(layout))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_all_balanced_places_on_every_model(model) -> None:  # type: ignore[no-untyped-def]
    counts = balanced_counts(model)
    layout = place_counts(model, counts)
    # 7-slot GPUs: 2x1g + 2g + 3g uses all 7 compute slices; 4-slot GPUs: 2x1g + 2g uses all 4.
    assert sum(p.profile.compute_slices for p in layout) == model.compute_slices
    assert sorted(p.compute_slices for p, n in counts.items() for _ in range(n)) == (
        [1, 1, 2, 3] if model.compute_slices == 7 else [1, 1, 2]
    )


def test_impossible_counts_name_the_layout() -> None:
    a100 = model_named("A100-40GB")
    with pytest.raises(PlacementError, match=r"layout 1x4g.20gb \+ 2x3g.20gb does not fit on one A100-40GB"):
        place_counts(a100, {a100.profile("4g.20gb"): 1, a100.profile("3g.20gb"): 2})
    with pytest.raises(PlacementError, match="at most 2 instance"):
        place_counts(a100, {a100.profile("3g.20gb"): 3})
