"""Shared fixtures: the bundled demo snapshot, loaded into a view."""

from __future__ import annotations

from pathlib import Path

import pytest

from extender.view.snapshot import load_snapshot
from extender.view.store import ClusterView

ROOT = Path(__file__).resolve().parents[1]
DEMO_SNAPSHOT = ROOT / "examples" / "demo-cluster.yaml"


@pytest.fixture
def demo_view() -> ClusterView:
    view = ClusterView()
    load_snapshot(view, str(DEMO_SNAPSHOT))
    return view
