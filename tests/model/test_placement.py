"""Placements against brute force (hypothesis) and NVML's rules."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extender.model.catalog import MODELS, model_named
from extender.model.placement import (
    Placement,
    PlacementError,
    free_starts,
    is_legal,
    max_instances,
    occupancy_of,
    place_all,
    start_chooser,
)

SMALL_MODELS = [model_named("A100-40GB"), model_named("A30-24GB"), model_named("H200-141GB")]


def _brute_force_fits(model, wanted, occupied) -> bool:  # type: ignore[no-untyped-def]
    """Try every combination of starts for every instance."""
    for starts in itertools.product(*(p.starts for p in wanted)):
        mask = occupied
        for profile, start in zip(wanted, starts):
            bits = profile.occupancy(start)
            if bits & mask:
                break
            mask |= bits
        else:
            return True
    return False


@st.composite
def gpu_states(draw):  # type: ignore[no-untyped-def]
    model = draw(st.sampled_from(SMALL_MODELS))
    occupied = draw(st.integers(0, model.full_mask))
    bases = [p for p in model.profiles if not p.has_attributes]
    wanted = tuple(draw(st.lists(st.sampled_from(bases), max_size=4)))
    return model, occupied, wanted


@settings(max_examples=300, deadline=None)
@given(gpu_states())
def test_place_all_agrees_with_brute_force(state) -> None:  # type: ignore[no-untyped-def]
    model, occupied, wanted = state
    for strategy in ("most-options", "first-fit"):
        placed = place_all(model, wanted, occupied, strategy)
        assert (placed is not None) == _brute_force_fits(model, wanted, occupied)
        if placed is not None:
            masks = [p.mask for p in placed]
            # Legal placements never overlap each other nor what was occupied.
            assert sum(masks) == sum(set(masks)) and all(not (m & occupied) for m in masks)
            assert sorted(p.profile.name for p in placed) == sorted(p.name for p in wanted)
            assert all(p.start in p.profile.starts for p in placed)


@settings(max_examples=200, deadline=None)
@given(gpu_states())
def test_place_then_free_restores_the_state(state) -> None:  # type: ignore[no-untyped-def]
    model, occupied, wanted = state
    placed = place_all(model, wanted, occupied)
    if placed is None:
        return
    after = occupied
    for p in placed:
        after |= p.mask
    for p in placed:
        after &= ~p.mask
    assert after == occupied


@settings(max_examples=200, deadline=None)
@given(gpu_states())
def test_max_instances_is_what_repeated_placement_achieves(state) -> None:  # type: ignore[no-untyped-def]
    model, occupied, _ = state
    for profile in model.profiles:
        # the largest set of pairwise disjoint free starts, over every subset of the legal starts
        best = 0
        for size in range(len(profile.starts) + 1):
            for subset in itertools.combinations(profile.starts, size):
                masks = [profile.occupancy(s) for s in subset]
                union = 0
                for m in masks:
                    union |= m
                disjoint = bin(union).count("1") == sum(bin(m).count("1") for m in masks)
                if disjoint and not union & occupied:
                    best = max(best, size)
        assert max_instances(model, profile, occupied) == min(best, profile.max_instances)


def test_legal_start_rules() -> None:
    a100 = model_named("A100-40GB")
    three_g, four_g, one_g = a100.profile("3g.20gb"), a100.profile("4g.20gb"), a100.profile("1g.5gb")
    # 4g@0 occupies slices 0-3: it blocks 3g@0 but not 3g@4 (NVML's overlap rule, go-nvml ``nvml.h``).
    occupied = four_g.occupancy(0)
    assert free_starts(three_g, occupied) == (4,)
    # 1g@6 kills 3g@4, 1g.10gb@6 and 7g.
    occupied = one_g.occupancy(6)
    assert not is_legal(three_g, 4, occupied)
    assert not is_legal(a100.profile("1g.10gb"), 6, occupied)
    assert not is_legal(a100.profile("7g.40gb"), 0, occupied)
    assert not is_legal(three_g, 2, 0)  # 2 is not a legal start of 3g


def test_one_g_goes_to_the_top_with_most_options() -> None:
    a100 = model_named("A100-40GB")
    assert start_chooser("most-options")(a100, a100.profile("1g.5gb"), 0) == 6
    assert start_chooser("first-fit")(a100, a100.profile("1g.5gb"), 0) == 0
    with pytest.raises(ValueError, match="unknown placement strategy 'best'"):
        start_chooser("best")


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("4g.20gb@0 3g.20gb@0", r"overlaps memory slices \[0, 1, 2, 3\]"),
        ("3g.20gb@2", r"may start only at \{0,4\}:4"),
        ("1g.5gb+me@0 1g.5gb+me@1", "at most 1 instance"),
    ],
)
def test_overlapping_layouts_are_rejected_with_the_slices(layout: str, message: str) -> None:
    a100 = model_named("A100-40GB")
    placements = [Placement(int(s), a100.profile(n)) for n, _, s in (t.partition("@") for t in layout.split())]
    with pytest.raises(PlacementError, match=message):
        occupancy_of(a100, placements)


def test_all_models_place_a_full_gpu_only_on_an_empty_one() -> None:
    for model in MODELS:
        full = max(model.profiles, key=lambda p: p.memory_slices)
        assert place_all(model, (full,), 0) is not None
        assert place_all(model, (full,), 1) is None
