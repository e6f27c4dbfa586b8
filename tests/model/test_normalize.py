"""``normalize``: raw node scores to kube-scheduler's 0..10, where it deliberately differs from min-max scaling."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from extender.model.scoring import normalize


def plain_min_max(raw: Sequence[float], top: int = 10) -> list[int]:
    """The textbook scaling ``normalize`` improves on: rounds (value - min) / (max - min) to 0..top."""
    low, high = min(raw), max(raw)
    return [round((value - low) * top / (high - low)) for value in raw]


@pytest.mark.parametrize(
    ("raw", "top", "expected", "differs_from_min_max"),
    [
        # anchors: where the two agree
        ([1.0, 2.0, 3.0], 10, [0, 5, 10], False),
        ([-10.0, -5.0, 0.0], 10, [0, 5, 10], False),  # negative scores scale alike
        ([3.0, 1.0, 2.0], 10, [10, 0, 5], False),  # in the order given, not sorted
        ([0.0, 1.0, 2.0], 100, [0, 50, 100], False),
        # a runner-up within half a step of the best: min-max rounds it up to a tie at 10
        ([0.0, 9.6, 10.0], 10, [0, 9, 10], True),
        ([-1.0, -0.02, 0.0], 10, [0, 9, 10], True),
        ([0.0, 99.6, 100.0], 100, [0, 99, 100], True),
        # two best nodes tie at the top, the one just behind them does not join them
        ([10.0, 10.0, 9.96, 0.0], 10, [10, 10, 9, 0], True),
        # equal scores (and scores equal to 1e-12): all best, where min-max divides by zero or splits them
        ([4.0, 4.0], 10, [10, 10], True),
        ([1.0, 1.0 + 1e-13], 10, [10, 10], True),
        ([-7.5], 10, [10], True),  # a single node
    ],
)
def test_normalize(raw: list[float], top: int, expected: list[int], differs_from_min_max: bool) -> None:
    assert normalize(raw, top) == expected
    try:
        plain = plain_min_max(raw, top)
    except ZeroDivisionError:
        plain = None
    # each case that claims a difference is one plain min-max gets wrong
    assert (plain != expected) is differs_from_min_max


def test_normalize_of_no_nodes() -> None:
    assert normalize([]) == []


@pytest.mark.parametrize("raw", [[0.0, 9.6, 10.0], [5.0, 1.0, 4.99, 5.0], [-3.0, 2.0, 1.999]])
def test_only_the_best_get_the_top(raw: list[float]) -> None:
    scores = normalize(raw)
    best = max(raw)
    assert all((score == 10) == (value == best) for score, value in zip(scores, raw))
    assert all(0 <= score <= 10 for score in scores)
