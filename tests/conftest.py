"""Shared fixtures: the bundled demo snapshot, loaded into a view; Hypothesis without time limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from extender.view.snapshot import load_snapshot
from extender.view.store import ClusterView

# Tests check behaviour, not timings: on a shared 2-core machine one example can take seconds, and a
# deadline would fail the test for the machine's load (BENCHMARKS.md measures speed instead).
settings.register_profile("mig-extender", deadline=None)
settings.load_profile("mig-extender")

ROOT = Path(__file__).resolve().parents[1]
DEMO_SNAPSHOT = ROOT / "examples" / "demo-cluster.yaml"


@pytest.fixture
def demo_view() -> ClusterView:
    view = ClusterView()
    load_snapshot(view, str(DEMO_SNAPSHOT))
    return view
