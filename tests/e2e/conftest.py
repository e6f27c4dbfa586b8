"""Fixtures for the end-to-end tests: one real control plane per session, a clean cluster per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import K8S_VERSION, ControlPlane, Extender, Kube, running_plane


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def default_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The default release's control plane, for the whole session."""
    with running_plane(tmp_path_factory.mktemp("plane"), K8S_VERSION) as control_plane:
        yield control_plane


@pytest.fixture(scope="session")
def plane(default_plane: ControlPlane) -> ControlPlane:
    """The control plane a test runs against (a module may override it, e.g. to run on several releases)."""
    return default_plane


@pytest.fixture
def kube(plane: ControlPlane) -> Iterator[Kube]:
    client = Kube(plane)
    client.clean()
    yield client
    client.clean()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def extender(plane: ControlPlane, kube: Kube, workdir: Path) -> Iterator[Extender]:
    process = Extender(plane, workdir)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def schedulers(plane: ControlPlane, workdir: Path) -> Iterator[list[object]]:
    """Handles of kube-schedulers a test starts; all stopped at the end, even when the test fails."""
    handles: list[object] = []
    yield handles
    for handle in handles:
        plane.stop_scheduler(handle)  # type: ignore[arg-type]
